"""What Kubernetes metadata adds to telemetry: Resource attributes of a process, the peer's identity
on spans and flows, and the Istio route of a request.

Usage::

    enricher = KubeEnricher(metadata)
    span_builder.resource_enricher = enricher.resource_attributes
    attrs = enricher.exchange_attributes(exchange)     # merged into the span's attributes
    peer = enricher.peer_service(exchange.connection.remote_address)

Peer attributes: ``service.peer.name`` and ``service.peer.namespace`` (semconv, the successor of
``peer.service``), and, since semantic conventions have no names for the remote end's Kubernetes
objects, ``otel_ebpf.peer.k8s.namespace.name``, ``otel_ebpf.peer.k8s.pod.name``,
``otel_ebpf.peer.k8s.workload.kind`` / ``.name``, ``otel_ebpf.peer.k8s.service.name`` and
``otel_ebpf.peer.k8s.node.name``. Mesh: ``otel_ebpf.mesh.virtual_service`` and
``otel_ebpf.mesh.destination_subset`` on client requests whose host an Istio VirtualService routes.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from otel_ebpf.records import Exchange, Role

from .metadata import Identity, KubeMetadata

__all__ = ["KubeEnricher", "peer_attributes"]

_MAX_CACHED = 4096


def peer_attributes(identity: Identity) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    if identity.service_name:
        attrs["service.peer.name"] = identity.service_name
    if identity.namespace:
        attrs["service.peer.namespace"] = identity.namespace
        attrs["otel_ebpf.peer.k8s.namespace.name"] = identity.namespace
    if identity.kind == "pod":
        attrs["otel_ebpf.peer.k8s.pod.name"] = identity.name
    elif identity.kind == "service":
        attrs["otel_ebpf.peer.k8s.service.name"] = identity.name
    if identity.workload:
        attrs["otel_ebpf.peer.k8s.workload.kind"] = identity.workload_kind
        attrs["otel_ebpf.peer.k8s.workload.name"] = identity.workload
    service = identity.attributes.get("k8s.service.name")
    if service and identity.kind != "service":
        attrs["otel_ebpf.peer.k8s.service.name"] = service
    if identity.node:
        attrs["otel_ebpf.peer.k8s.node.name"] = identity.node
    return attrs


class KubeEnricher:
    def __init__(self, metadata: KubeMetadata) -> None:
        self.metadata = metadata
        self._peers: OrderedDict[str, tuple[Identity | None, dict[str, Any]]] = OrderedDict()
        self._generation = 0
        metadata.on_change = self._changed
        self.on_change = None  # set by the agent: Resources are rebuilt after metadata changes

    def _changed(self) -> None:
        self._peers.clear()
        callback = self.on_change
        if callback is not None:
            callback()

    def resource_attributes(self, pid: int) -> dict[str, str] | None:
        return self.metadata.resource_attributes(pid)

    def _peer(self, address: str) -> tuple[Identity | None, dict[str, Any]]:
        hit = self._peers.get(address)
        if hit is None:
            identity = self.metadata.identity(address) if address else None
            hit = (identity, peer_attributes(identity) if identity is not None else {})
            self._peers[address] = hit
            if len(self._peers) > _MAX_CACHED:
                self._peers.popitem(last=False)
        return hit

    def peer_identity(self, address: str) -> Identity | None:
        return self._peer(address)[0]

    def peer_service(self, address: str) -> str | None:
        identity = self._peer(address)[0]
        return identity.service_name if identity is not None and identity.service_name else None

    def exchange_attributes(self, exchange: Exchange) -> dict[str, Any]:
        attrs = dict(self._peer(exchange.connection.remote_address)[1])
        if exchange.connection.role == Role.CLIENT and self.metadata.istio_enabled:
            host = exchange.request.header("host") or exchange.request.header(":authority")
            local = self.metadata.pod_for_pid(exchange.connection.pid)
            namespace = local[0].namespace if local is not None else ""
            route = self.metadata.mesh_route(host or "", namespace)
            if route is not None:
                attrs["otel_ebpf.mesh.virtual_service"] = route[0]
                if route[1]:
                    attrs["otel_ebpf.mesh.destination_subset"] = route[1]
        return attrs
