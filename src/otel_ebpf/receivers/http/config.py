"""Configuration of the ``http`` receiver (YAML key ``receivers: http:``)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from ...bpf.sockdata import DEFAULT_RING_BYTES, MAX_CAPTURE_BYTES
from ...stream.conntable import DEFAULT_IDLE_TIMEOUT_S, DEFAULT_MAX_CONNECTIONS

__all__ = ["HttpReceiverConfig", "create_default_config"]


@dataclass
class HttpReceiverConfig:
    max_capture_bytes: int = 4096  # payload prefix captured per syscall
    ring_buffer_bytes: int = DEFAULT_RING_BYTES  # kernel→user ring (power of two)
    pids: list[int] = field(default_factory=list)  # only these processes (empty: all)
    ports: list[int] = field(default_factory=list)  # only connections with this local or remote port
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT_S  # seconds
    poll_interval_ms: int = 100
    record_path: str | None = None  # also write raw kernel records here (replayable)

    def validate(self, key: str = "receivers.http") -> None:
        for name in ("max_capture_bytes", "ring_buffer_bytes", "max_connections", "poll_interval_ms"):
            if isinstance(getattr(self, name), bool):
                raise ValueError(f"{key}.{name}: must be an integer, not a boolean")
        for name in ("pids", "ports"):
            if not isinstance(getattr(self, name), (list, tuple)):
                raise ValueError(f"{key}.{name}: must be a list, e.g. [{'8080' if name == 'ports' else '1234'}]")
        if not isinstance(self.max_capture_bytes, int) or not 1 <= self.max_capture_bytes <= MAX_CAPTURE_BYTES:
            raise ValueError(f"{key}.max_capture_bytes: must be an integer in 1..{MAX_CAPTURE_BYTES}")
        rb = self.ring_buffer_bytes
        if not isinstance(rb, int) or rb < 4096 or rb & (rb - 1):
            raise ValueError(f"{key}.ring_buffer_bytes: must be a power of two >= 4096")
        for p in self.pids:
            if not isinstance(p, int) or isinstance(p, bool) or p <= 0:
                raise ValueError(f"{key}.pids: {p!r} is not a process id")
        for p in self.ports:
            if not isinstance(p, int) or isinstance(p, bool) or not 0 < p < 65536:
                raise ValueError(f"{key}.ports: {p!r} is not a TCP port")
        if not isinstance(self.max_connections, int) or self.max_connections < 1:
            raise ValueError(f"{key}.max_connections: must be a positive integer")
        if (not isinstance(self.idle_timeout, (int, float)) or isinstance(self.idle_timeout, bool)
                or not 0 < self.idle_timeout < 10**9):
            raise ValueError(f"{key}.idle_timeout: must be a positive number of seconds")
        if not isinstance(self.poll_interval_ms, int) or not 1 <= self.poll_interval_ms <= 10000:
            raise ValueError(f"{key}.poll_interval_ms: must be in 1..10000")

    @classmethod
    def from_dict(cls, data: dict | None, key: str = "receivers.http") -> HttpReceiverConfig:
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{key}.{unknown[0]}: unknown setting (known: {', '.join(sorted(known))})")
        cfg = cls(**data)
        cfg.validate(key)
        return cfg


def create_default_config() -> HttpReceiverConfig:
    return HttpReceiverConfig()
