"""Kubernetes metadata end to end: two real processes placed in pod-shaped cgroups (under the v2
hierarchy), talking between their loopback pod IPs, described by the in-repo fake API server; the
agent's spans, service-graph metrics and flow logs must name both ends' pods, workloads and services."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest

from otel_ebpf.kube.cgroup import cgroup_v2_mount, make_pod_cgroup, move_pid, remove_cgroup
from otel_ebpf.service.agent import Agent
from otel_ebpf.service.config import ServiceConfig
from otel_ebpf.testing import SPAN_KIND_CLIENT, SPAN_KIND_SERVER, OtlpReceiver
from otel_ebpf.testing.fake_kube import (
    FakeKubeApiServer, make_deployment, make_node, make_pod, make_replicaset, make_service,
)
from otel_ebpf.testing.net import free_port, wait_listening

from .support import APPS, PY, wait_until

pytest.importorskip("kubernetes")

SERVER_IP, CLIENT_IP, CLUSTER_IP = "127.0.10.1", "127.0.10.2", "127.0.20.1"
SERVER_CID, CLIENT_CID = "1" * 64, "2" * 64
SERVER_UID, CLIENT_UID = str(uuid.uuid4()), str(uuid.uuid4())

CLIENT = """
import http.client, sys
for line in sys.stdin:
    conn = http.client.HTTPConnection(sys.argv[1], int(sys.argv[2]), source_address=(sys.argv[3], 0))
    for _ in range(int(line)):
        conn.request("GET", "/ok")
        assert conn.getresponse().read() is not None
    conn.close()
    print("done", flush=True)
"""


@pytest.fixture
def pods(tmp_path):
    root = cgroup_v2_mount()
    assert root is not None, "no cgroup2 hierarchy mounted"
    top = root / f"otel-ebpf-test-{os.getpid()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    port = free_port()
    server = subprocess.Popen([PY, str(APPS / "threading_server.py"), str(port), SERVER_IP], env=env,
                              stdout=subprocess.DEVNULL)
    client = subprocess.Popen([PY, "-c", CLIENT, SERVER_IP, str(port), CLIENT_IP], env=env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        move_pid(make_pod_cgroup(top, SERVER_UID, SERVER_CID), server.pid)
        move_pid(make_pod_cgroup(top, CLIENT_UID, CLIENT_CID, qos="besteffort"), client.pid)
        wait_listening(port, host=SERVER_IP)
        yield port, server, client
    finally:
        for proc in (server, client):
            proc.kill()
            proc.wait(10)
        remove_cgroup(top)


def _cluster(kube: FakeKubeApiServer) -> None:
    kube.add(make_node("node-1", internal_ip="127.0.0.1"))
    kube.add(make_deployment("checkout", "shop"))
    kube.add(make_replicaset("checkout-5f7c", "shop", owner_deployment="checkout"))
    kube.add(make_pod("checkout-5f7c-x1", "shop", ip=SERVER_IP, node="node-1", uid=SERVER_UID,
                      owner=("ReplicaSet", "checkout-5f7c"), containers=[("app", f"containerd://{SERVER_CID}")]))
    kube.add(make_deployment("frontend", "web"))
    kube.add(make_replicaset("frontend-8d2e", "web", owner_deployment="frontend"))
    kube.add(make_pod("frontend-8d2e-y2", "web", ip=CLIENT_IP, node="node-1", uid=CLIENT_UID,
                      labels={"app.kubernetes.io/name": "storefront"}, owner=("ReplicaSet", "frontend-8d2e"),
                      containers=[("web", f"containerd://{CLIENT_CID}")]))
    kube.add(make_service("checkout", "shop", cluster_ip=CLUSTER_IP, selector={"app": "checkout"}))


def _requests(client, n: int) -> None:
    client.stdin.write(f"{n}\n")
    client.stdin.flush()
    assert client.stdout.readline().strip() == "done"


def test_spans_metrics_and_flows_name_both_ends_by_pod_workload_and_service(pods, tmp_path):
    port, server, client = pods
    with FakeKubeApiServer() as kube, OtlpReceiver() as otlp:
        _cluster(kube)
        cfg = ServiceConfig.from_dict({
            "receivers": {"http": {"ports": [port], "poll_interval_ms": 20}, "tcpflow": {"poll_interval_ms": 20}},
            "processors": {"kubernetes": {"node_name": "node-1", "kubeconfig": str(kube.kubeconfig(tmp_path / "kc")),
                                          "istio": "off"},
                           "servicegraph": {"wait": "1s"}},
            "exporters": {"otlp": {"endpoint": otlp.grpc_endpoint}},
            "service": {"metrics_interval": "1s", "pipelines": {
                "traces": {"receivers": ["http"], "processors": ["kubernetes"], "exporters": ["otlp"]},
                "metrics": {"receivers": ["http", "tcpflow"], "processors": ["kubernetes", "servicegraph"],
                            "exporters": ["otlp"]},
                "logs": {"receivers": ["tcpflow"], "processors": ["kubernetes"], "exporters": ["otlp"]}}},
        })
        agent = Agent(cfg, environ={})
        agent.start()
        try:
            _requests(client, 5)
            spans = otlp.wait_for_spans(10, timeout=30, where=lambda s: s.attributes.get("server.port") == port
                                        or s.attributes.get("network.peer.port") == port)
            graph = otlp.wait_for_metrics(1, timeout=30, where=lambda m: m.name == "traces_service_graph_request_total"
                                          and any(p["attributes"].get("server") == "checkout" for p in m.data_points))
            flows = otlp.wait_for_logs(1, timeout=30, where=lambda r: r.attributes.get("network.local.port") == port
                                       and r.attributes.get("otel_ebpf.flow.state") == "closed")
            # Pod churn: an annotation renames the service; Resources follow.
            kube.modify(make_pod("checkout-5f7c-x1", "shop", ip=SERVER_IP, node="node-1", uid=SERVER_UID,
                                 owner=("ReplicaSet", "checkout-5f7c"), containers=[("app", f"containerd://{SERVER_CID}")],
                                 annotations={"resource.opentelemetry.io/service.name": "checkout-v2"}))
            kube_pods = agent.kube.informers["Pod"]
            wait_until(lambda: kube_pods.get("shop", "checkout-5f7c-x1").annotations)
            _requests(client, 3)
            renamed = otlp.wait_for_spans(1, timeout=30, where=lambda s: s.kind == SPAN_KIND_SERVER
                                          and s.resource.get("service.name") == "checkout-v2")
        finally:
            agent.shutdown()

    server_spans = [s for s in spans if s.kind == SPAN_KIND_SERVER]
    client_spans = [s for s in spans if s.kind == SPAN_KIND_CLIENT]
    assert len(server_spans) >= 5 and len(client_spans) >= 5
    r = server_spans[0].resource
    assert (r["k8s.namespace.name"], r["k8s.pod.name"], r["k8s.pod.uid"]) == ("shop", "checkout-5f7c-x1", SERVER_UID)
    assert (r["k8s.deployment.name"], r["k8s.replicaset.name"]) == ("checkout", "checkout-5f7c")
    assert (r["k8s.container.name"], r["container.id"], r["k8s.node.name"]) == ("app", SERVER_CID, "node-1")
    assert r["service.name"] == "checkout" and r["service.namespace"] == "shop"
    a = server_spans[0].attributes
    assert a["service.peer.name"] == "storefront" and a["otel_ebpf.peer.k8s.pod.name"] == "frontend-8d2e-y2"
    assert a["otel_ebpf.peer.k8s.workload.name"] == "frontend"
    c = client_spans[0]
    assert c.resource["service.name"] == "storefront" and c.resource["k8s.deployment.name"] == "frontend"
    assert c.attributes["service.peer.name"] == "checkout" and c.attributes["service.peer.namespace"] == "shop"

    points = [p for m in graph for p in m.data_points]
    edge = [p for p in points if p["attributes"] == {"client": "storefront", "server": "checkout",
                                                     "connection_type": ""}]
    assert edge and edge[0]["value"] == 5

    flow = flows[0]
    assert flow.resource["k8s.pod.name"] == "checkout-5f7c-x1"
    assert flow.attributes["service.peer.name"] == "storefront"
    assert flow.attributes["otel_ebpf.peer.k8s.namespace.name"] == "web"

    assert renamed, "the annotation's service.name never reached the spans"
