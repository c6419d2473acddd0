"""otel-ebpf's spans land in the Envoy sidecars' traces, with the right parents (real Envoy, real apps)."""

from __future__ import annotations

import concurrent.futures

import pytest

from otel_ebpf.service.agent import Agent
from otel_ebpf.service.config import ServiceConfig
from otel_ebpf.testing import SPAN_KIND_CLIENT, SPAN_KIND_SERVER, OtlpReceiver, ZipkinReceiver

from .harness import Mesh, require_envoy


def _agent(mesh: Mesh, otlp: OtlpReceiver) -> Agent:
    ports = [p for name, p in mesh.ports.items() if name != "collector"]
    cfg = ServiceConfig.from_dict({
        "receivers": {"http": {"ports": ports, "poll_interval_ms": 20}},
        "processors": {"stitching": {}},
        "exporters": {"otlp": {"endpoint": otlp.grpc_endpoint}},
        "service": {"pipelines": {"traces": {"receivers": ["http"], "processors": ["stitching"],
                                             "exporters": ["otlp"]}}},
    })
    agent = Agent(cfg, environ={})
    agent.start()
    return agent


def _ours(otlp: OtlpReceiver):
    return [s for s in otlp.spans() if s.scope == "otel_ebpf"]


def _hex(value: str) -> str:
    return value.rjust(32, "0")


def _by_path(spans, pid, kind, path):
    return [s for s in spans if s.resource.get("process.pid") == pid and s.kind == kind
            and (s.attributes.get("url.path") == path or str(s.attributes.get("url.full", "")).endswith(path))]


def _run(mesh: Mesh, otlp: OtlpReceiver, n: int, *, concurrency: int = 1):
    agent = _agent(mesh, otlp)
    try:
        paths = [f"/a/{i}" for i in range(n)]
        with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
            statuses = list(pool.map(lambda p: mesh.get(p)[0], paths))
        assert statuses == [200] * n
        mesh.wait_for_envoy_spans(3 * n, timeout=30)
        otlp.wait_for(lambda spans: len([s for s in spans if s.scope == "otel_ebpf"]) >= 3 * n, timeout=30)
    finally:
        agent.shutdown()
    return agent


@pytest.fixture(autouse=True)
def _envoy():
    require_envoy()


@pytest.mark.parametrize("app", ["threaded", "asyncio"])
def test_with_forwarded_context_every_span_is_parented_inside_envoys_one_trace(tmp_path, app):
    with OtlpReceiver() as otlp, Mesh(tracer="otel", app=app, propagate="forward", receiver=otlp,
                                      workdir=tmp_path) as mesh:
        n = 10
        agent = _run(mesh, otlp, n, concurrency=5)
        envoy = mesh.envoy_spans()
        ours = _ours(otlp)
        assert not [s for s in ours if s.resource.get("process.pid") in (mesh.envoy_a.pid, mesh.envoy_b.pid)]
        for i in range(n):
            a_in = next(e for e in envoy if e.sidecar == "envoy-a" and e.name == "ingress" and e.url.endswith(f"/a/{i}"))
            b_in = next(e for e in envoy if e.sidecar == "envoy-b" and e.name == "ingress" and e.url.endswith(f"/b/{i}"))
            trace = _hex(a_in.trace_id)
            s_a = _by_path(ours, mesh.app_a.pid, SPAN_KIND_SERVER, f"/a/{i}")
            c_a = _by_path(ours, mesh.app_a.pid, SPAN_KIND_CLIENT, f"/b/{i}")
            s_b = _by_path(ours, mesh.app_b.pid, SPAN_KIND_SERVER, f"/b/{i}")
            assert len(s_a) == len(c_a) == len(s_b) == 1, (i, s_a, c_a, s_b)
            s_a, c_a, s_b = s_a[0], c_a[0], s_b[0]
            assert s_a.trace_id == c_a.trace_id == s_b.trace_id == trace
            assert s_a.parent_span_id == a_in.span_id
            assert c_a.parent_span_id == s_a.span_id
            assert c_a.attributes["otel_ebpf.parent.source"] == "forwarded"
            assert s_b.parent_span_id == b_in.span_id
            # one root per trace: Envoy's ingress span
            in_trace = [s for s in otlp.spans() if s.trace_id == trace]
            assert [s.name for s in in_trace if not s.parent_span_id] == ["ingress"]
        assert agent.stitcher.stats()["otel_ebpf.stitching.ambiguous"] == 0


def test_threaded_app_propagating_nothing_is_parented_by_thread_and_linked_across_envoys_new_trace(tmp_path):
    with OtlpReceiver() as otlp, Mesh(tracer="otel", app="threaded", propagate="none", receiver=otlp,
                                      workdir=tmp_path) as mesh:
        n = 10
        _run(mesh, otlp, n, concurrency=5)
        envoy = mesh.envoy_spans()
        ours = _ours(otlp)
        for i in range(n):
            a_in = next(e for e in envoy if e.sidecar == "envoy-a" and e.name == "ingress" and e.url.endswith(f"/a/{i}"))
            a_out = next(e for e in envoy if e.sidecar == "envoy-a" and e.name == "egress" and e.url.endswith(f"/b/{i}"))
            b_in = next(e for e in envoy if e.sidecar == "envoy-b" and e.name == "ingress" and e.url.endswith(f"/b/{i}"))
            assert a_out.trace_id != a_in.trace_id  # Envoy restarted the trace: the app propagated nothing
            (s_a,) = _by_path(ours, mesh.app_a.pid, SPAN_KIND_SERVER, f"/a/{i}")
            (c_a,) = _by_path(ours, mesh.app_a.pid, SPAN_KIND_CLIENT, f"/b/{i}")
            (s_b,) = _by_path(ours, mesh.app_b.pid, SPAN_KIND_SERVER, f"/b/{i}")
            assert s_a.trace_id == c_a.trace_id == _hex(a_in.trace_id)
            assert s_a.parent_span_id == a_in.span_id
            assert c_a.parent_span_id == s_a.span_id and c_a.attributes["otel_ebpf.parent.source"] == "thread"
            assert s_b.trace_id == _hex(b_in.trace_id) and s_b.parent_span_id == b_in.span_id
            # joined both ways by links
            assert (_hex(a_out.trace_id), a_out.span_id, "envoy-egress") in [
                (lk["trace_id"], lk["span_id"], lk["attributes"].get("otel_ebpf.link.reason")) for lk in c_a.links]
            assert (c_a.trace_id, c_a.span_id, "envoy-restart") in [
                (lk["trace_id"], lk["span_id"], lk["attributes"].get("otel_ebpf.link.reason")) for lk in s_b.links]


def test_asyncio_app_propagating_nothing_under_interleaving_never_gets_a_wrong_parent(tmp_path):
    with OtlpReceiver() as otlp, Mesh(tracer="otel", app="asyncio", propagate="none", sleep_ms=20,
                                      receiver=otlp, workdir=tmp_path) as mesh:
        n = 50
        agent = _run(mesh, otlp, n, concurrency=10)
        ours = _ours(otlp)
        servers = {s.span_id: s for s in ours if s.kind == SPAN_KIND_SERVER
                   and s.resource.get("process.pid") == mesh.app_a.pid}
        clients = [s for s in ours if s.kind == SPAN_KIND_CLIENT and s.resource.get("process.pid") == mesh.app_a.pid]
        assert len(clients) == n
        wrong = 0
        for c in clients:
            i = c.attributes["url.full"].rsplit("/", 1)[1]
            if c.parent_span_id:
                parent = servers[c.parent_span_id]
                wrong += parent.attributes["url.path"] != f"/a/{i}"
            else:
                assert c.links, "an unparented client span must link to its candidate parents"
        assert wrong == 0
        stats = agent.stitcher.stats()
        assert stats["otel_ebpf.stitching.ambiguous"] + stats["otel_ebpf.stitching.parent.thread"] == n


def test_zipkin_b3_with_64_bit_trace_ids_and_forwarded_headers(tmp_path):
    with ZipkinReceiver() as zipkin, OtlpReceiver() as otlp, Mesh(
            tracer="zipkin", app="threaded", propagate="forward", receiver=zipkin, trace_id_128bit=False,
            workdir=tmp_path) as mesh:
        n = 5
        agent = _agent(mesh, otlp)
        try:
            for i in range(n):
                assert mesh.get(f"/a/{i}")[0] == 200
            mesh.wait_for_envoy_spans(3 * n, timeout=30)
            otlp.wait_for(lambda spans: len(spans) >= 3 * n, timeout=30)
        finally:
            agent.shutdown()
        envoy = mesh.envoy_spans()
        ours = _ours(otlp)
        for i in range(n):
            a_in = next(e for e in envoy if e.sidecar == "envoy-a" and e.name == "ingress" and e.url.endswith(f"/a/{i}"))
            assert len(a_in.trace_id) == 16  # a 64-bit B3 trace id
            (s_a,) = _by_path(ours, mesh.app_a.pid, SPAN_KIND_SERVER, f"/a/{i}")
            (c_a,) = _by_path(ours, mesh.app_a.pid, SPAN_KIND_CLIENT, f"/b/{i}")
            (s_b,) = _by_path(ours, mesh.app_b.pid, SPAN_KIND_SERVER, f"/b/{i}")
            assert s_a.trace_id == c_a.trace_id == s_b.trace_id == a_in.trace_id_32
            assert s_a.parent_span_id == a_in.span_id
            assert s_a.attributes["otel_ebpf.parent.source"] in ("x-b3", "b3")
            assert c_a.parent_span_id == s_a.span_id
