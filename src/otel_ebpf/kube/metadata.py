"""Kubernetes metadata for the agent: which pod a process runs in, who is behind an address, and
the Resource attributes, peer identities and mesh routes that follow.

Usage::

    meta = KubeMetadata(KubeConfig(node_name="node-1"))
    meta.start()                      # informers: list + watch, bounded slim records
    meta.wait_synced(10)
    meta.resource_attributes(pid)     # {"k8s.namespace.name": ..., "k8s.pod.name": ..., "service.name": ...}
    meta.identity("10.1.2.3")         # Identity(kind="pod", namespace=..., workload=..., service_name=...)
    meta.mesh_route("reviews")        # ("reviews-route", "v2") when an Istio VirtualService routes that host

Pods are listed for this node only (``spec.nodeName`` field selector; ``all_pods`` lists every
pod, for peers on other nodes). Services, EndpointSlices, Nodes and the workload kinds are listed
cluster-wide; Istio VirtualServices and DestinationRules only when their CRDs are served.

``service.name`` follows the OpenTelemetry Kubernetes guide (non-normative): the pod annotation
``resource.opentelemetry.io/service.name``, then (with ``well_known_labels``, on by default)
``app.kubernetes.io/instance`` and ``app.kubernetes.io/name``, then the owning workload
(Deployment, ReplicaSet, StatefulSet, DaemonSet, CronJob, Job), then the pod and container names.
A process's own OTEL_SERVICE_NAME still wins (see SpanBuilder).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field

from .cgroup import ContainerResolver
from .informer import Informer, ResourceSpec
from .model import (
    Endpoints, IstioDestinationRule, IstioVirtualService, Node, Pod, Service, Workload,
    slim_destination_rule, slim_endpointslice, slim_node, slim_pod, slim_service, slim_virtual_service,
    slim_workload,
)

__all__ = ["Identity", "KubeConfig", "KubeMetadata", "RESOURCES"]

log = logging.getLogger(__name__)

PODS = ResourceSpec("Pod", "/api/v1/pods")
SERVICES = ResourceSpec("Service", "/api/v1/services")
ENDPOINTSLICES = ResourceSpec("EndpointSlice", "/apis/discovery.k8s.io/v1/endpointslices")
NODES = ResourceSpec("Node", "/api/v1/nodes", namespaced=False)
WORKLOADS = (
    ResourceSpec("ReplicaSet", "/apis/apps/v1/replicasets"),
    ResourceSpec("Deployment", "/apis/apps/v1/deployments"),
    ResourceSpec("StatefulSet", "/apis/apps/v1/statefulsets"),
    ResourceSpec("DaemonSet", "/apis/apps/v1/daemonsets"),
    ResourceSpec("Job", "/apis/batch/v1/jobs"),
    ResourceSpec("CronJob", "/apis/batch/v1/cronjobs"),
)
ISTIO_GROUP = "networking.istio.io"
VIRTUAL_SERVICES = ResourceSpec("VirtualService", "/apis/networking.istio.io/v1/virtualservices")
DESTINATION_RULES = ResourceSpec("DestinationRule", "/apis/networking.istio.io/v1/destinationrules")
RESOURCES = (PODS, SERVICES, ENDPOINTSLICES, NODES, *WORKLOADS, VIRTUAL_SERVICES, DESTINATION_RULES)
"""Everything the agent lists and watches (the DaemonSet's RBAC grants get, list, watch on these)."""

_WORKLOAD_ATTR = {"Deployment": "k8s.deployment.name", "ReplicaSet": "k8s.replicaset.name",
                  "StatefulSet": "k8s.statefulset.name", "DaemonSet": "k8s.daemonset.name",
                  "Job": "k8s.job.name", "CronJob": "k8s.cronjob.name"}
_ANNOTATION = "resource.opentelemetry.io/"


@dataclass
class KubeConfig:
    node_name: str | None = None  # default: $K8S_NODE_NAME, $NODE_NAME, else the host name
    kubeconfig: str | None = None  # default: in-cluster when $KUBERNETES_SERVICE_HOST is set, else ~/.kube/config
    all_pods: bool = False  # list every pod of the cluster, not only this node's
    well_known_labels: bool = True  # app.kubernetes.io/instance and /name name services
    istio: str = "auto"  # auto | on | off
    proc_root: str = "/proc"

    def validate(self, key: str = "kubernetes") -> None:
        if self.istio not in ("auto", "on", "off"):
            raise ValueError(f"{key}.istio: must be auto, on or off")


@dataclass(frozen=True)
class Identity:
    """Who is behind an address: a pod, a Service (ClusterIP) or a node."""

    kind: str  # "pod", "service", "node"
    name: str
    namespace: str = ""
    workload_kind: str = ""
    workload: str = ""
    service_name: str = ""  # what the telemetry of that end is named (service.name)
    node: str = ""
    attributes: dict = field(default_factory=dict, compare=False)


def _api_client(cfg: KubeConfig):
    from kubernetes import client, config  # noqa: PLC0415 -- optional dependency, loaded only when used

    if cfg.kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config()
    else:
        config.load_kube_config(config_file=cfg.kubeconfig)
    return client.ApiClient()


class KubeMetadata:
    def __init__(self, config: KubeConfig, *, api_client=None, resolver: ContainerResolver | None = None) -> None:
        config.validate()
        self.config = config
        self.node_name = (config.node_name or os.environ.get("K8S_NODE_NAME") or os.environ.get("NODE_NAME")
                          or socket.gethostname())
        self._api = api_client
        self.resolver = resolver or ContainerResolver(proc_root=config.proc_root)
        self.informers: dict[str, Informer] = {}
        self._lock = threading.Lock()
        # indexes, rebuilt incrementally from informer changes
        self._pod_by_container: dict[str, tuple[str, str]] = {}
        self._pod_by_uid: dict[str, tuple[str, str]] = {}
        self._pod_by_ip: dict[str, tuple[str, str]] = {}
        self._service_by_ip: dict[str, tuple[str, str]] = {}
        self._endpoint_by_ip: dict[str, tuple[str, str, str]] = {}  # ip -> (namespace, service, pod)
        self._node_by_ip: dict[str, str] = {}
        self.on_change = None  # called (no arguments) after any change that may alter attributes
        self.istio_enabled = False

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        if self._api is None:
            self._api = _api_client(self.config)
        pod_selector = None if self.config.all_pods else f"spec.nodeName={self.node_name}"
        specs: list[tuple[ResourceSpec, object, str | None]] = [
            (PODS, slim_pod, pod_selector), (SERVICES, slim_service, None),
            (ENDPOINTSLICES, slim_endpointslice, None), (NODES, slim_node, None),
        ]
        for spec in WORKLOADS:
            specs.append((spec, lambda obj, kind=spec.kind: slim_workload(obj, kind), None))
        self.istio_enabled = self._istio_served()
        if self.istio_enabled:
            specs += [(VIRTUAL_SERVICES, slim_virtual_service, None), (DESTINATION_RULES, slim_destination_rule, None)]
        for spec, slim, selector in specs:
            informer = Informer(self._api, spec, slim=slim, field_selector=selector, on_change=self._changed)
            self.informers[spec.kind] = informer
            informer.start()

    def _istio_served(self) -> bool:
        if self.config.istio != "auto":
            return self.config.istio == "on"
        try:
            method, url, headers, body, post = self._api.param_serialize(
                method="GET", resource_path=f"/apis/{ISTIO_GROUP}", header_params={"Accept": "application/json"},
                auth_settings=["BearerToken"])
            response = self._api.call_api(method, url, header_params=headers, _request_timeout=10)
            response.read()
            return response.status == 200
        except Exception:  # noqa: BLE001 -- no Istio (or no permission to tell): run without it
            return False

    def wait_synced(self, timeout_s: float) -> bool:
        for informer in self.informers.values():
            if not informer.synced.wait(timeout_s):
                return False
        return True

    def stop(self, timeout_s: float = 5.0) -> None:
        for informer in self.informers.values():
            informer.signal_stop()
        deadline = time.monotonic() + timeout_s
        for informer in self.informers.values():
            informer.join(max(0.0, deadline - time.monotonic()))

    def counters(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for kind, informer in self.informers.items():
            for name, value in informer.counters().items():
                out[f"{kind.lower()}.{name}"] = value
        out["resolver.lookups"] = self.resolver.lookups
        return out

    # -- indexes --------------------------------------------------------------------------------

    def _changed(self, kind: str, old, new) -> None:
        with self._lock:
            if kind == "Pod":
                if old is not None:
                    self._unindex_pod(old)
                if new is not None:
                    self._index_pod(new)
            elif kind == "Service":
                for record, add in ((old, False), (new, True)):
                    if record is None:
                        continue
                    for ip in record.cluster_ips:
                        if add:
                            self._service_by_ip[ip] = (record.namespace, record.name)
                        elif self._service_by_ip.get(ip) == (record.namespace, record.name):
                            del self._service_by_ip[ip]
            elif kind == "EndpointSlice":
                if old is not None:
                    for ip, _pod in old.addresses:
                        if self._endpoint_by_ip.get(ip, ("",))[0] == old.namespace:
                            self._endpoint_by_ip.pop(ip, None)
                if new is not None:
                    for ip, pod in new.addresses:
                        self._endpoint_by_ip[ip] = (new.namespace, new.service, pod)
            elif kind == "Node":
                if old is not None:
                    for ip in old.addresses:
                        self._node_by_ip.pop(ip, None)
                if new is not None:
                    for ip in new.addresses:
                        self._node_by_ip[ip] = new.name
        callback = self.on_change
        if callback is not None:
            callback()

    def _index_pod(self, pod: Pod) -> None:
        key = (pod.namespace, pod.name)
        self._pod_by_uid[pod.uid] = key
        if pod.mirror:  # a static pod: its cgroup names it by the config hash
            self._pod_by_uid[pod.mirror] = key
        for cid, _name in pod.containers:
            self._pod_by_container[cid] = key
        if not pod.host_network:
            for ip in pod.ips:
                self._pod_by_ip[ip] = key

    def _unindex_pod(self, pod: Pod) -> None:
        key = (pod.namespace, pod.name)
        for uid in (pod.uid, pod.mirror):
            if uid and self._pod_by_uid.get(uid) == key:
                del self._pod_by_uid[uid]
        for cid, _name in pod.containers:
            if self._pod_by_container.get(cid) == key:
                del self._pod_by_container[cid]
        for ip in pod.ips:
            if self._pod_by_ip.get(ip) == key:
                del self._pod_by_ip[ip]

    def _pod(self, key: tuple[str, str] | None) -> Pod | None:
        if key is None:
            return None
        informer = self.informers.get("Pod")
        return informer.get(*key) if informer is not None else None

    # -- lookups --------------------------------------------------------------------------------

    def pod_for_pid(self, pid: int) -> tuple[Pod, str, str] | None:
        """(pod, container name, container id) of a process, from its cgroup."""
        ref = self.resolver.for_pid(pid)
        if ref is None:
            return None
        pod = self._pod(self._pod_by_container.get(ref.container_id))
        if pod is None and ref.pod_uid:
            pod = self._pod(self._pod_by_uid.get(ref.pod_uid))
        if pod is None:
            return None
        name = next((n for cid, n in pod.containers if cid == ref.container_id), "")
        return pod, name, ref.container_id

    def workload_of(self, pod: Pod) -> tuple[str, str]:
        """(kind, name) of the pod's top owner: ReplicaSet -> Deployment, Job -> CronJob."""
        owner = pod.owner
        if owner is None:
            return "", ""
        kind, name = owner.kind, owner.name
        informer = self.informers.get(kind)
        record: Workload | None = informer.get(pod.namespace, name) if informer is not None else None
        if record is not None and record.owner is not None and record.owner.kind in ("Deployment", "CronJob"):
            return record.owner.kind, record.owner.name
        return kind, name

    def service_name(self, pod: Pod, container: str = "") -> str:
        explicit = pod.annotation(_ANNOTATION + "service.name")
        if explicit:
            return explicit
        if self.config.well_known_labels:
            for label in ("app.kubernetes.io/instance", "app.kubernetes.io/name"):
                value = pod.label(label)
                if value:
                    return value
        kind, name = self.workload_of(pod)
        if name:
            return name
        return pod.name or container

    def resource_attributes(self, pid: int) -> dict[str, str] | None:
        """Resource attributes of the process's pod and container, or None outside any known pod."""
        found = self.pod_for_pid(pid)
        if found is None:
            return None
        pod, container, container_id = found
        attrs = self.pod_attributes(pod, container)
        attrs["container.id"] = container_id
        return attrs

    def pod_attributes(self, pod: Pod, container: str = "") -> dict[str, str]:
        attrs = {"k8s.namespace.name": pod.namespace, "k8s.pod.name": pod.name, "k8s.pod.uid": pod.uid}
        if pod.node:
            attrs["k8s.node.name"] = pod.node
        if container:
            attrs["k8s.container.name"] = container
        owner = pod.owner
        if owner is not None and owner.kind in _WORKLOAD_ATTR:
            attrs[_WORKLOAD_ATTR[owner.kind]] = owner.name
        kind, name = self.workload_of(pod)
        if kind in _WORKLOAD_ATTR:
            attrs[_WORKLOAD_ATTR[kind]] = name
        for key, value in pod.annotations:  # resource.opentelemetry.io/<attribute> -> <attribute>
            attrs[key[len(_ANNOTATION):]] = value
        attrs["service.name"] = self.service_name(pod, container)
        attrs.setdefault("service.namespace", pod.namespace)
        if "service.version" not in attrs and self.config.well_known_labels:
            version = pod.label("app.kubernetes.io/version")
            if version:
                attrs["service.version"] = version
        attrs.setdefault("service.instance.id", f"{pod.namespace}.{pod.name}.{container}" if container
                         else f"{pod.namespace}.{pod.name}")
        return attrs

    def identity(self, ip: str) -> Identity | None:
        """Who is behind ``ip``: a pod (by pod IP or endpoint), a Service (ClusterIP), or a node."""
        with self._lock:
            pod_key = self._pod_by_ip.get(ip)
            svc_key = self._service_by_ip.get(ip)
            endpoint = self._endpoint_by_ip.get(ip)
            node = self._node_by_ip.get(ip)
        pod = self._pod(pod_key)
        if pod is not None:
            kind, name = self.workload_of(pod)
            return Identity("pod", pod.name, pod.namespace, kind, name, self.service_name(pod), pod.node,
                            self.pod_attributes(pod))
        if svc_key is not None:
            namespace, name = svc_key
            return Identity("service", name, namespace, service_name=name,
                            attributes={"k8s.namespace.name": namespace, "k8s.service.name": name})
        if endpoint is not None:  # a pod on another node, known from the EndpointSlice
            namespace, service, pod_name = endpoint
            return Identity("pod", pod_name or ip, namespace, "", "", service,
                            attributes={"k8s.namespace.name": namespace, "k8s.pod.name": pod_name,
                                        "k8s.service.name": service})
        if node is not None:
            return Identity("node", node, service_name=node, node=node, attributes={"k8s.node.name": node})
        return None

    def mesh_route(self, host: str, namespace: str = "") -> tuple[str, str] | None:
        """(VirtualService name, destination subset) routing ``host`` (a Host header or authority),
        when Istio resources exist. Short names are matched in ``namespace``."""
        informer = self.informers.get("VirtualService")
        if informer is None or not host:
            return None
        host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
        for vs in informer.values():
            if not isinstance(vs, IstioVirtualService):
                continue
            for candidate in vs.hosts:
                if _host_matches(candidate, host, vs.namespace):
                    subset = vs.destinations[0][1] if vs.destinations else ""
                    return vs.name, subset
        return None

    # typing helpers for readers of this module
    Pod = Pod
    Service = Service
    Endpoints = Endpoints
    Node = Node
    IstioDestinationRule = IstioDestinationRule


def _host_matches(pattern: str, host: str, namespace: str) -> bool:
    if pattern == host or pattern == "*":
        return True
    short = host.split(".", 1)[0]
    if pattern == short:
        return True
    if "." not in pattern and host in (f"{pattern}.{namespace}", f"{pattern}.{namespace}.svc",
                                       f"{pattern}.{namespace}.svc.cluster.local"):
        return True
    if pattern.startswith("*."):
        return host.endswith(pattern[1:])
    return False
