"""The ``http`` receiver: HTTP/1.x exchanges from eBPF syscall capture."""

from .config import HttpReceiverConfig, create_default_config
from .factory import TYPE, create_receiver
from .receiver import ExchangeConsumer, HttpReceiver

__all__ = ["TYPE", "HttpReceiver", "HttpReceiverConfig", "ExchangeConsumer", "create_default_config",
           "create_receiver"]
