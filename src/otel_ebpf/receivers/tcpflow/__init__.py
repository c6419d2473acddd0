"""The ``tcpflow`` receiver: TCP flow records (bytes, RTT, retransmits, resets, failures) from the kernel."""

from .config import TcpFlowReceiverConfig, create_default_config
from .factory import TYPE, create_receiver
from .receiver import TcpFlowReceiver

__all__ = ["TYPE", "TcpFlowReceiver", "TcpFlowReceiverConfig", "create_default_config", "create_receiver"]
