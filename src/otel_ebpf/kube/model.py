"""Slim records of the Kubernetes objects the agent needs, reduced from raw API JSON.

Only what attributes and lookups use is kept (a few hundred bytes per pod instead of the
client's typed models): names, uid, IPs, owner, the labels and annotations the service-naming
rules read, container ids and names, and for Istio the hosts, routes and subsets.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

__all__ = [
    "Endpoints", "IstioDestinationRule", "IstioVirtualService", "Node", "Owner", "Pod", "Service", "Workload",
    "slim_destination_rule", "slim_endpointslice", "slim_node", "slim_pod", "slim_service", "slim_virtual_service",
    "slim_workload",
]

# Labels and annotations kept on pods and workloads: what service naming reads.
KEPT_LABELS = ("app.kubernetes.io/instance", "app.kubernetes.io/name", "app.kubernetes.io/version",
               "app.kubernetes.io/component", "app.kubernetes.io/part-of", "app", "version")
ANNOTATION_PREFIX = "resource.opentelemetry.io/"
# A static pod's mirror in the API server has its own uid; its cgroup carries the kubelet's config
# hash, which the mirror pod names in this annotation.
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"


@dataclass(frozen=True, slots=True)
class Owner:
    kind: str
    name: str


@dataclass(frozen=True, slots=True)
class Pod:
    uid: str
    name: str
    namespace: str
    node: str
    ips: tuple[str, ...]
    host_network: bool
    owner: Owner | None
    labels: tuple[tuple[str, str], ...]
    annotations: tuple[tuple[str, str], ...]  # resource.opentelemetry.io/* only
    containers: tuple[tuple[str, str], ...]  # (container id without runtime prefix, container name)
    phase: str
    mirror: str = ""  # static pods: the kubelet's config hash (annotation kubernetes.io/config.mirror)

    def label(self, key: str) -> str | None:
        for k, v in self.labels:
            if k == key:
                return v
        return None

    def annotation(self, key: str) -> str | None:
        for k, v in self.annotations:
            if k == key:
                return v
        return None


@dataclass(frozen=True, slots=True)
class Service:
    uid: str
    name: str
    namespace: str
    cluster_ips: tuple[str, ...]
    selector: tuple[tuple[str, str], ...]
    ports: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Endpoints:
    """One EndpointSlice: the addresses behind a Service, with the pod each belongs to."""

    name: str
    namespace: str
    service: str
    addresses: tuple[tuple[str, str], ...]  # (ip, pod name or "")


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    uid: str
    addresses: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Workload:
    """A ReplicaSet, Deployment, StatefulSet, DaemonSet, Job or CronJob."""

    kind: str
    name: str
    namespace: str
    uid: str
    owner: Owner | None  # ReplicaSet -> Deployment, Job -> CronJob


@dataclass(frozen=True, slots=True)
class IstioVirtualService:
    name: str
    namespace: str
    hosts: tuple[str, ...]
    # first HTTP route's destinations: (host, subset or "", weight)
    destinations: tuple[tuple[str, str, int], ...]


@dataclass(frozen=True, slots=True)
class IstioDestinationRule:
    name: str
    namespace: str
    host: str
    subsets: tuple[tuple[str, tuple[tuple[str, str], ...]], ...]  # (subset name, its labels)


_intern = sys.intern  # namespaces, nodes, kinds, label keys and values repeat across thousands of objects


def _meta(obj: dict) -> dict:
    return obj.get("metadata") or {}


def _owner(meta: dict) -> Owner | None:
    refs = meta.get("ownerReferences") or ()
    for ref in refs:
        if ref.get("controller"):
            return Owner(_intern(ref.get("kind", "")), _intern(ref.get("name", "")))
    if refs:
        return Owner(_intern(refs[0].get("kind", "")), _intern(refs[0].get("name", "")))
    return None


def _container_id(raw: str | None) -> str:
    """``containerd://abc…`` -> ``abc…`` (runtime prefix dropped, as cgroup paths carry no prefix)."""
    if not raw:
        return ""
    return raw.split("://", 1)[-1]


def slim_pod(obj: dict) -> Pod:
    meta = _meta(obj)
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    ips = tuple(p["ip"] for p in status.get("podIPs") or () if p.get("ip"))
    if not ips and status.get("podIP"):
        ips = (status["podIP"],)
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    containers = []
    for key in ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses"):
        for cs in status.get(key) or ():
            cid = _container_id(cs.get("containerID"))
            if cid:
                containers.append((cid, _intern(cs.get("name", ""))))
    return Pod(
        uid=meta.get("uid", ""), name=meta.get("name", ""), namespace=_intern(meta.get("namespace", "")),
        node=_intern(spec.get("nodeName", "")), ips=ips, host_network=bool(spec.get("hostNetwork")), owner=_owner(meta),
        labels=tuple((k, _intern(labels[k])) for k in KEPT_LABELS if k in labels),
        annotations=tuple(sorted((k, v) for k, v in annotations.items() if k.startswith(ANNOTATION_PREFIX))),
        containers=tuple(containers), phase=_intern(status.get("phase", "")),
        mirror=annotations.get(MIRROR_ANNOTATION, ""),
    )


def slim_service(obj: dict) -> Service:
    meta = _meta(obj)
    spec = obj.get("spec") or {}
    ips = tuple(ip for ip in (spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else []))
                if ip and ip != "None")
    return Service(uid=meta.get("uid", ""), name=meta.get("name", ""), namespace=meta.get("namespace", ""),
                   cluster_ips=ips, selector=tuple(sorted((spec.get("selector") or {}).items())),
                   ports=tuple(p.get("port", 0) for p in spec.get("ports") or ()))


def slim_endpointslice(obj: dict) -> Endpoints:
    meta = _meta(obj)
    service = (meta.get("labels") or {}).get("kubernetes.io/service-name", "")
    addresses = []
    for ep in obj.get("endpoints") or ():
        target = ep.get("targetRef") or {}
        pod = target.get("name", "") if target.get("kind") == "Pod" else ""
        for ip in ep.get("addresses") or ():
            addresses.append((ip, pod))
    return Endpoints(name=meta.get("name", ""), namespace=meta.get("namespace", ""), service=service,
                     addresses=tuple(addresses))


def slim_node(obj: dict) -> Node:
    meta = _meta(obj)
    addresses = tuple(a["address"] for a in (obj.get("status") or {}).get("addresses") or ()
                      if a.get("type") in ("InternalIP", "ExternalIP") and a.get("address"))
    return Node(name=meta.get("name", ""), uid=meta.get("uid", ""), addresses=addresses)


def slim_workload(obj: dict, kind: str | None = None) -> Workload:
    """``kind``: lists omit each item's kind, the informer knows it."""
    meta = _meta(obj)
    return Workload(kind=kind or obj.get("kind") or "", name=meta.get("name", ""), namespace=meta.get("namespace", ""),
                    uid=meta.get("uid", ""), owner=_owner(meta))


def slim_virtual_service(obj: dict) -> IstioVirtualService:
    meta = _meta(obj)
    spec = obj.get("spec") or {}
    destinations = []
    http = spec.get("http") or ()
    if http:
        for route in http[0].get("route") or ():
            dest = route.get("destination") or {}
            destinations.append((dest.get("host", ""), dest.get("subset", ""), int(route.get("weight", 100))))
    return IstioVirtualService(name=meta.get("name", ""), namespace=meta.get("namespace", ""),
                               hosts=tuple(spec.get("hosts") or ()), destinations=tuple(destinations))


def slim_destination_rule(obj: dict) -> IstioDestinationRule:
    meta = _meta(obj)
    spec = obj.get("spec") or {}
    subsets = tuple((s.get("name", ""), tuple(sorted((s.get("labels") or {}).items())))
                    for s in spec.get("subsets") or ())
    return IstioDestinationRule(name=meta.get("name", ""), namespace=meta.get("namespace", ""),
                                host=spec.get("host", ""), subsets=subsets)
