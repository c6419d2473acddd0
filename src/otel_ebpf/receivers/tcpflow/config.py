"""Configuration of the ``tcpflow`` receiver (YAML key ``receivers: tcpflow:``)."""

from __future__ import annotations

from dataclasses import dataclass, fields

from ...bpf.tcpflow import DEFAULT_RING_BYTES

__all__ = ["TcpFlowReceiverConfig", "create_default_config"]


@dataclass
class TcpFlowReceiverConfig:
    flow_interval: float = 15.0  # seconds between snapshots of a long-lived connection
    ring_buffer_bytes: int = DEFAULT_RING_BYTES  # kernel→user ring (power of two)
    poll_interval_ms: int = 200

    def validate(self, key: str = "receivers.tcpflow") -> None:
        if isinstance(self.flow_interval, bool) or not isinstance(self.flow_interval, (int, float)) \
                or not self.flow_interval > 0:
            raise ValueError(f"{key}.flow_interval: must be a positive duration, e.g. 15s")
        rb = self.ring_buffer_bytes
        if isinstance(rb, bool) or not isinstance(rb, int) or rb < 4096 or rb & (rb - 1):
            raise ValueError(f"{key}.ring_buffer_bytes: must be a power of two >= 4096")
        p = self.poll_interval_ms
        if isinstance(p, bool) or not isinstance(p, int) or not 1 <= p <= 10_000:
            raise ValueError(f"{key}.poll_interval_ms: must be an integer in 1..10000")

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in fields(cls)}


def create_default_config() -> TcpFlowReceiverConfig:
    return TcpFlowReceiverConfig()
