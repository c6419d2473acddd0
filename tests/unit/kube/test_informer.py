"""The informer and the metadata cache against the in-repo fake API server, through the official
kubernetes client: list + watch, bookmarks, a dropped watch, 410 relist, pod churn, indexes."""

from __future__ import annotations

import time

import pytest

from otel_ebpf.kube.cgroup import ContainerRef
from otel_ebpf.kube.informer import Informer
from otel_ebpf.kube.metadata import PODS, KubeConfig, KubeMetadata
from otel_ebpf.kube.model import slim_pod
from otel_ebpf.testing.fake_kube import (
    FakeKubeApiServer, make_deployment, make_endpointslice, make_node, make_pod, make_replicaset, make_service,
)

pytest.importorskip("kubernetes")

CID = "a" * 64


def wait(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def lists_of(server, path: str) -> int:
    return sum(1 for r in server.request_log if r.path == path and not r.watch)


@pytest.fixture
def server():
    with FakeKubeApiServer(bookmark_interval=0.2) as s:
        yield s


def test_list_then_watch_sees_additions_changes_and_deletions(server):
    server.add(make_pod("a", "shop", ip="127.0.10.1", node="node-1"))
    server.add(make_pod("other", "shop", ip="127.0.10.9", node="node-2"))
    changes = []
    informer = Informer(server.api_client(), PODS, slim=slim_pod, field_selector="spec.nodeName=node-1",
                        on_change=lambda kind, old, new: changes.append((old and old.name, new and new.name)))
    informer.start()
    try:
        assert informer.synced.wait(10)
        assert set(informer.store) == {("shop", "a")}  # node-2's pod is not this node's
        server.wait_for_watches(1, kind="Pod")
        server.add(make_pod("b", "shop", ip="127.0.10.2", node="node-1"))
        server.modify(make_pod("a", "shop", ip="127.0.10.1", node="node-1", labels={"app.kubernetes.io/name": "x"}))
        server.delete("Pod", "shop", "b")
        wait(lambda: ("shop", "b") not in informer.store and informer.get("shop", "a").label(
            "app.kubernetes.io/name") == "x")
        assert changes == [(None, "a"), (None, "b"), ("a", "a"), ("b", None)]
    finally:
        informer.stop()


def test_a_dropped_watch_resumes_from_its_resource_version_without_relisting(server):
    server.add(make_pod("a", "shop", ip="127.0.10.1", node="node-1"))
    informer = Informer(server.api_client(), PODS, slim=slim_pod)
    informer.start()
    try:
        assert informer.synced.wait(10)
        server.wait_for_watches(1, kind="Pod")
        for i in range(3):
            server.drop_watches(kind="Pod")
            server.add(make_pod(f"p{i}", "shop", ip=f"127.0.11.{i}", node="node-1"))
            wait(lambda i=i: ("shop", f"p{i}") in informer.store)
        assert lists_of(server, "/api/v1/pods") == 1 and informer.relists == 0
        assert informer.watches >= 4
    finally:
        informer.stop()


def test_bookmarks_move_the_resource_version_on(server):
    informer = Informer(server.api_client(), PODS, slim=slim_pod)
    informer.start()
    try:
        assert informer.synced.wait(10)
        server.add(make_node("node-9", internal_ip="127.0.0.9"))  # another kind: moves the global version
        target = str(server.resource_version)
        server.send_bookmarks()
        wait(lambda: informer.bookmarks > 0 and informer.resource_version == target)
    finally:
        informer.stop()


def test_410_gone_relists_once_and_reports_what_disappeared_meanwhile(server):
    server.add(make_pod("a", "shop", ip="127.0.10.1", node="node-1"))
    server.add(make_pod("b", "shop", ip="127.0.10.2", node="node-1"))
    deleted = []
    informer = Informer(server.api_client(), PODS, slim=slim_pod,
                        on_change=lambda kind, old, new: new is None and deleted.append(old.name))
    informer.start()
    try:
        assert informer.synced.wait(10)
        server.wait_for_watches(1, kind="Pod")
        informer.stop()  # a long partition: meanwhile "b" goes and the history is compacted
        server.delete("Pod", "shop", "b")
        server.compact()
        informer.start()  # resumes its watch from a version the server no longer has: 410
        wait(lambda: informer.relists == 1 and ("shop", "b") not in informer.store)
        assert deleted == ["b"] and ("shop", "a") in informer.store
        assert lists_of(server, "/api/v1/pods") == 2
    finally:
        informer.stop()


def test_pages_of_a_large_list_are_followed(server):
    for i in range(1203):
        server.add(make_pod(f"p{i}", "big", ip=f"127.1.{i // 250}.{i % 250}", node="node-1"))
    informer = Informer(server.api_client(), PODS, slim=slim_pod)
    informer.start()
    try:
        assert informer.synced.wait(20)
        assert len(informer.store) == 1203
        assert lists_of(server, "/api/v1/pods") == 3  # 500 + 500 + 203
    finally:
        informer.stop()


class FixedResolver:
    """pid -> container, as the cgroup resolver would find it."""

    lookups = 0

    def __init__(self, table):
        self.table = table

    def for_pid(self, pid):
        return self.table.get(pid)


def test_metadata_names_a_process_by_its_pod_workload_and_service_and_an_address_by_its_owner(server):
    server.add(make_node("node-1", internal_ip="127.0.0.1"))
    server.add(make_deployment("checkout", "shop"))
    server.add(make_replicaset("checkout-7d9f", "shop", owner_deployment="checkout"))
    server.add(make_pod("checkout-7d9f-x1", "shop", ip="127.0.10.1", node="node-1",
                        owner=("ReplicaSet", "checkout-7d9f"), containers=[("app", f"containerd://{CID}")]))
    server.add(make_pod("web-0", "shop", ip="127.0.10.2", node="node-1",
                        annotations={"resource.opentelemetry.io/service.name": "storefront"}))
    server.add(make_service("checkout", "shop", cluster_ip="127.0.20.1", selector={"app": "checkout"}))
    server.add(make_endpointslice("checkout-abc", "shop", service="checkout", addresses=["127.0.30.5"],
                                  pod_names=["checkout-remote"]))
    meta = KubeMetadata(KubeConfig(node_name="node-1", istio="off"), api_client=server.api_client(),
                        resolver=FixedResolver({42: ContainerRef("containerd", CID, None, None)}))
    meta.start()
    try:
        assert meta.wait_synced(10)
        attrs = meta.resource_attributes(42)
        assert attrs["k8s.pod.name"] == "checkout-7d9f-x1" and attrs["k8s.namespace.name"] == "shop"
        assert attrs["k8s.deployment.name"] == "checkout" and attrs["k8s.replicaset.name"] == "checkout-7d9f"
        assert attrs["k8s.container.name"] == "app" and attrs["container.id"] == CID
        assert attrs["k8s.node.name"] == "node-1" and attrs["service.name"] == "checkout"
        assert attrs["service.instance.id"] == "shop.checkout-7d9f-x1.app"
        assert meta.resource_attributes(43) is None
        assert meta.identity("127.0.10.2").service_name == "storefront"  # the annotation wins
        svc = meta.identity("127.0.20.1")
        assert (svc.kind, svc.name, svc.namespace) == ("service", "checkout", "shop")
        remote = meta.identity("127.0.30.5")
        assert (remote.kind, remote.name, remote.service_name) == ("pod", "checkout-remote", "checkout")
        assert meta.identity("127.0.0.1").kind == "node"
        assert meta.identity("127.0.99.99") is None
    finally:
        meta.stop()


def test_a_static_pod_is_found_by_the_config_hash_its_cgroup_carries(server):
    config_hash = "6d0b2f1e8c3a4b5d9e7f1a2b3c4d5e6f"
    server.add(make_pod("kube-apiserver-node-1", "kube-system", ip="127.0.0.1", node="node-1", host_network=True,
                        annotations={"kubernetes.io/config.mirror": config_hash}, containers=[("kube-apiserver", None)]))
    resolver = FixedResolver({7: ContainerRef("containerd", "c" * 64, config_hash, "burstable")})
    meta = KubeMetadata(KubeConfig(node_name="node-1", istio="off"), api_client=server.api_client(), resolver=resolver)
    meta.start()
    try:
        assert meta.wait_synced(10)
        attrs = meta.resource_attributes(7)
        assert attrs["k8s.pod.name"] == "kube-apiserver-node-1" and attrs["k8s.namespace.name"] == "kube-system"
        assert attrs["container.id"] == "c" * 64
    finally:
        meta.stop()
