"""Factory of the ``tcpflow`` receiver: its YAML type, default config and constructor."""

from __future__ import annotations

from .config import TcpFlowReceiverConfig, create_default_config
from .receiver import TcpFlowReceiver

TYPE = "tcpflow"


def create_receiver(config: TcpFlowReceiverConfig, consumer) -> TcpFlowReceiver:
    return TcpFlowReceiver(config, consumer)


__all__ = ["TYPE", "TcpFlowReceiverConfig", "create_default_config", "create_receiver"]
