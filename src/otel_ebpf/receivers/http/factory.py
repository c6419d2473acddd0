"""Factory of the ``http`` receiver: its YAML type, default config and constructor."""

from __future__ import annotations

from .config import HttpReceiverConfig, create_default_config
from .receiver import HttpReceiver

TYPE = "http"


def create_receiver(config: HttpReceiverConfig, consumer) -> HttpReceiver:
    return HttpReceiver(config, consumer)


__all__ = ["TYPE", "create_default_config", "create_receiver", "HttpReceiverConfig"]
