"""Configuration of the ``stitching`` processor (YAML key ``processors: stitching:``)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

__all__ = ["StitchingConfig", "create_default_config"]


@dataclass
class StitchingConfig:
    # Envoy's own ends yield no L7 span (their flows stay): processes with these executable
    # names, sockets on these local ports (Istio: 15001 outbound, 15006 inbound, 15000 admin,
    # 15021 health, 15090 stats) or from these local addresses (Istio's inbound passthrough source).
    envoy_process_names: list[str] = field(default_factory=lambda: ["envoy"])
    envoy_ports: list[int] = field(default_factory=lambda: [15000, 15001, 15006, 15021, 15090])
    envoy_addresses: list[str] = field(default_factory=lambda: ["127.0.0.6"])
    # An outbound request carrying a context the app made itself (not the inbound one forwarded
    # verbatim) already has a CLIENT span from the app's own SDK: emit none.
    suppress_instrumented_clients: bool = True
    max_in_flight: int = 65536  # requests between head and completion, bounded (evictions counted)

    def validate(self, key: str = "processors.stitching") -> None:
        for name in ("envoy_process_names", "envoy_ports", "envoy_addresses"):
            if not isinstance(getattr(self, name), list):
                raise ValueError(f"{key}.{name}: must be a list")
        for n in self.envoy_process_names:
            if not isinstance(n, str) or not n:
                raise ValueError(f"{key}.envoy_process_names: {n!r} is not a process name")
        for p in self.envoy_ports:
            if not isinstance(p, int) or isinstance(p, bool) or not 0 < p < 65536:
                raise ValueError(f"{key}.envoy_ports: {p!r} is not a TCP port")
        for a in self.envoy_addresses:
            try:
                if not isinstance(a, str):
                    raise TypeError(a)
                ipaddress.ip_address(a)
            except (ValueError, TypeError):
                raise ValueError(f"{key}.envoy_addresses: {a!r} is not an IP address") from None
        if not isinstance(self.suppress_instrumented_clients, bool):
            raise ValueError(f"{key}.suppress_instrumented_clients: must be true or false")
        if not isinstance(self.max_in_flight, int) or isinstance(self.max_in_flight, bool) or self.max_in_flight < 1:
            raise ValueError(f"{key}.max_in_flight: must be a positive integer")


def create_default_config() -> StitchingConfig:
    return StitchingConfig()
