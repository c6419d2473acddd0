"""Istio routes from the metadata cache, peer attributes, and service-graph pairing by connection."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from opentelemetry.trace import SpanKind, Status, StatusCode

from otel_ebpf.kube.enrich import KubeEnricher
from otel_ebpf.kube.metadata import KubeConfig, KubeMetadata
from otel_ebpf.records import Role
from otel_ebpf.telemetry.servicegraph import ServiceGraph
from otel_ebpf.testing.fake_kube import FakeKubeApiServer, make_destination_rule, make_pod, make_virtual_service

from ..factories import make_exchange

pytest.importorskip("kubernetes")


class NoResolver:
    lookups = 0

    def for_pid(self, pid):
        return None


@pytest.mark.parametrize("istio", [True, False])
def test_istio_routes_are_found_only_when_the_crds_are_served(istio):
    with FakeKubeApiServer(istio=istio) as kube:
        kube.add(make_pod("reviews-v2-1", "bookinfo", ip="127.0.10.7", node="node-1"))
        if istio:
            kube.add(make_virtual_service("reviews-route", "bookinfo", hosts=["reviews"], http=[
                {"route": [{"destination": {"host": "reviews", "subset": "v2"}, "weight": 90},
                           {"destination": {"host": "reviews", "subset": "v1"}, "weight": 10}]}]))
            kube.add(make_destination_rule("reviews", "bookinfo", host="reviews",
                                           subsets=[{"name": "v1", "labels": {"version": "v1"}},
                                                    {"name": "v2", "labels": {"version": "v2"}}]))
        meta = KubeMetadata(KubeConfig(node_name="node-1"), api_client=kube.api_client(), resolver=NoResolver())
        meta.start()
        try:
            assert meta.wait_synced(10)
            assert meta.istio_enabled is istio
            if istio:
                assert meta.mesh_route("reviews:9080", "bookinfo") == ("reviews-route", "v2")
                assert meta.mesh_route("reviews.bookinfo.svc.cluster.local", "bookinfo") == ("reviews-route", "v2")
                assert meta.mesh_route("ratings", "bookinfo") is None
                enricher = KubeEnricher(meta)
                ex = make_exchange(role=Role.CLIENT, remote=("127.0.10.7", 9080),
                                   headers=(("host", "reviews:9080"),))
                attrs = enricher.exchange_attributes(ex)
                assert attrs["otel_ebpf.mesh.virtual_service"] == "reviews-route"
                assert attrs["otel_ebpf.mesh.destination_subset"] == "v2"
                assert attrs["otel_ebpf.peer.k8s.pod.name"] == "reviews-v2-1"
            else:
                assert "VirtualService" not in meta.informers
                assert meta.mesh_route("reviews", "bookinfo") is None
        finally:
            meta.stop()


def span(kind, *, seconds=0.01, error=False, span_id=1):
    return SimpleNamespace(kind=kind, start_time=0, end_time=int(seconds * 1e9),
                           status=Status(StatusCode.ERROR if error else StatusCode.UNSET),
                           context=SimpleNamespace(span_id=span_id), parent=None)


CONN = ("127.0.10.2", 50000, "127.0.10.1", 8080)


def test_client_and_server_exchanges_of_one_connection_pair_in_order():
    graph = ServiceGraph(resource=None, wait_s=60)
    graph.record(span(SpanKind.SERVER, seconds=0.01), service="checkout", peer=None, connection=CONN)
    graph.record(span(SpanKind.SERVER, seconds=0.02, error=True), service="checkout", peer=None, connection=CONN)
    graph.record(span(SpanKind.CLIENT, seconds=0.03), service="web", peer="checkout", connection=CONN)
    graph.record(span(SpanKind.CLIENT, seconds=0.04), service="web", peer="checkout", connection=CONN)
    assert graph.edges() == {("web", "checkout", ""): (2, 1)}
    [(_, metrics)] = graph.collect()
    by_name = {m.name: m for m in metrics}
    assert set(by_name) == {"traces_service_graph_request_total", "traces_service_graph_request_failed_total",
                            "traces_service_graph_request_server_seconds",
                            "traces_service_graph_request_client_seconds"}
    server = by_name["traces_service_graph_request_server_seconds"].data.data_points[0]
    assert server.count == 2 and server.sum == pytest.approx(0.03)
    assert server.attributes == {"client": "web", "server": "checkout", "connection_type": ""}


def test_a_side_left_alone_becomes_an_edge_to_a_virtual_node():
    graph = ServiceGraph(resource=None, wait_s=0.0)
    graph.record(span(SpanKind.SERVER), service="checkout", peer=None, connection=CONN)
    graph.record(span(SpanKind.CLIENT), service="web", peer=None, connection=("127.0.10.2", 50001, "1.2.3.4", 443),
                 peer_address="api.example.com")
    time.sleep(0.01)
    graph.expire()
    assert graph.edges() == {("user", "checkout", "virtual_node"): (1, 0),
                             ("web", "api.example.com", "virtual_node"): (1, 0)}
