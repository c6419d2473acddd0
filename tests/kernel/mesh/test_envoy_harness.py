"""The Envoy mesh harness on its own, without otel-ebpf: real sidecars, real apps, real receivers.

These pin what later stitching tests rely on: Envoy's spans reach the receiver for both tracers,
one trace crosses both sidecars only when the app forwards the context, and the headers Envoy puts
on the app's inbound request name Envoy's own spans (see the header notes in harness.py).
"""

from __future__ import annotations

import re
import time

import pytest

from .harness import EnvoySidecar, Mesh, require_envoy

TRACERS = ["otel", "zipkin"]
APPS = ["threaded", "asyncio"]
UUID_SAMPLED = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-9[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}$")


@pytest.fixture(autouse=True)
def _require_envoy():
    require_envoy()


def _by_hop(spans):
    """{"a.ingress": span, "a.egress": span, "b.ingress": span} for the spans of one request."""
    hops = {f"{s.sidecar.removeprefix('envoy-')}.{s.name}": s for s in spans}
    assert len(hops) == len(spans), spans
    return hops


def _headers(entry):
    return {name.lower(): value for name, value in entry["headers"]}


@pytest.mark.parametrize("tracer", TRACERS)
def test_one_request_through_the_mesh_yields_the_three_envoy_spans(tracer, tmp_path):
    with Mesh(tracer=tracer, workdir=tmp_path) as mesh:
        assert mesh.startup_s < 3.0
        status, body = mesh.get("/a/7")
        assert status == 200
        assert body == f"b7 from {mesh.app_b.pid}\n".encode()
        spans = _by_hop(mesh.wait_for_envoy_spans(3))

    assert set(spans) == {"a.ingress", "a.egress", "b.ingress"}
    assert [spans[h].kind for h in ("a.ingress", "a.egress", "b.ingress")] == ["SERVER", "CLIENT", "SERVER"]
    assert spans["a.ingress"].url.endswith(f":{mesh.envoy_a.inbound_port}/a/7")
    assert spans["a.egress"].url.endswith(f":{mesh.envoy_a.outbound_port}/b/7")
    for span in spans.values():
        assert len(span.trace_id) == 32
        assert span.tags["http.status_code"] == "200"


@pytest.mark.parametrize("app", APPS)
@pytest.mark.parametrize("tracer", TRACERS)
def test_an_app_forwarding_the_context_keeps_one_trace_across_both_sidecars(tracer, app, tmp_path):
    with Mesh(tracer=tracer, app=app, propagate="forward", workdir=tmp_path) as mesh:
        assert mesh.get("/a/1")[0] == 200
        spans = _by_hop(mesh.wait_for_envoy_spans(3))

    assert spans["a.ingress"].trace_id == spans["b.ingress"].trace_id == spans["a.egress"].trace_id
    assert spans["a.ingress"].parent_id == ""
    assert spans["a.egress"].parent_id == spans["a.ingress"].span_id
    assert spans["b.ingress"].parent_id == spans["a.egress"].span_id
    assert spans["a.ingress"].request_id == spans["b.ingress"].request_id


@pytest.mark.parametrize("app", APPS)
@pytest.mark.parametrize("tracer", TRACERS)
def test_an_app_propagating_nothing_makes_the_egress_sidecar_start_a_new_trace(tracer, app, tmp_path):
    with Mesh(tracer=tracer, app=app, propagate="none", workdir=tmp_path) as mesh:
        assert mesh.get("/a/1")[0] == 200
        spans = _by_hop(mesh.wait_for_envoy_spans(3))

    assert spans["a.ingress"].trace_id != spans["b.ingress"].trace_id
    assert spans["a.egress"].parent_id == ""  # a new root ...
    assert spans["a.egress"].trace_id == spans["b.ingress"].trace_id  # ... of the trace B continues
    assert spans["b.ingress"].parent_id == spans["a.egress"].span_id
    assert spans["a.ingress"].request_id != spans["b.ingress"].request_id  # x-request-id is regenerated too


def test_otel_sidecars_hand_each_app_their_own_span_as_traceparent_parent(tmp_path):
    with Mesh(tracer="otel", propagate="forward", record=True, workdir=tmp_path) as mesh:
        assert mesh.get("/a/1")[0] == 200
        spans = _by_hop(mesh.wait_for_envoy_spans(3))
        (a,) = mesh.app_a.requests()
        (b,) = mesh.app_b.requests()

    a_headers, b_headers = _headers(a), _headers(b)
    ingress_a, egress_a, ingress_b = spans["a.ingress"], spans["a.egress"], spans["b.ingress"]
    assert a_headers["traceparent"] == f"00-{ingress_a.trace_id}-{ingress_a.span_id}-01"
    assert b_headers["traceparent"] == f"00-{ingress_b.trace_id}-{ingress_b.span_id}-01"
    assert ingress_b.parent_id == egress_a.span_id
    assert a_headers["tracestate"] == ""  # sent, empty
    assert not any(name.startswith("x-b3") or name == "b3" for name in a_headers)
    assert UUID_SAMPLED.match(a_headers["x-request-id"])
    assert a_headers["x-request-id"] == ingress_a.request_id == b_headers["x-request-id"]
    assert a_headers["x-forwarded-proto"] == "http"
    assert a_headers["x-envoy-expected-rq-timeout-ms"] == "15000"
    assert "x-forwarded-for" not in a_headers and "x-envoy-decorator-operation" not in b_headers
    assert a["peer"].startswith("127.0.0.6:")  # Istio's inbound passthrough source address
    assert a["tid"] != a["pid"]  # the threaded app serves from a worker thread


def test_zipkin_sidecars_hand_each_app_their_own_span_in_x_b3_headers(tmp_path):
    with Mesh(tracer="zipkin", propagate="forward", record=True, workdir=tmp_path) as mesh:
        assert mesh.get("/a/1")[0] == 200
        spans = _by_hop(mesh.wait_for_envoy_spans(3))
        a_headers, b_headers = _headers(mesh.app_a.requests()[0]), _headers(mesh.app_b.requests()[0])

    ingress_a, egress_a, ingress_b = spans["a.ingress"], spans["a.egress"], spans["b.ingress"]
    assert a_headers["x-b3-traceid"] == ingress_a.trace_id
    assert a_headers["x-b3-spanid"] == ingress_a.span_id == ingress_a.trace_id[16:]  # a root's id: low 64 bits
    assert "x-b3-parentspanid" not in a_headers
    assert a_headers["x-b3-sampled"] == "1"
    assert (b_headers["x-b3-spanid"], b_headers["x-b3-parentspanid"]) == (ingress_b.span_id, egress_a.span_id)
    assert "traceparent" not in a_headers and "b3" not in a_headers


def test_zipkin_sidecars_can_use_64_bit_trace_ids(tmp_path):
    with Mesh(tracer="zipkin", propagate="forward", record=True, trace_id_128bit=False, workdir=tmp_path) as mesh:
        assert mesh.get("/a/1")[0] == 200
        spans = _by_hop(mesh.wait_for_envoy_spans(3))
        a_headers = _headers(mesh.app_a.requests()[0])

    assert {len(s.trace_id) for s in spans.values()} == {16}
    assert a_headers["x-b3-traceid"] == spans["a.ingress"].trace_id == spans["a.ingress"].span_id
    assert spans["a.ingress"].trace_id_32 == "0" * 16 + spans["a.ingress"].trace_id


def test_the_mesh_exposes_distinct_processes_and_stops_them_all(tmp_path):
    with Mesh(tracer="otel", app="asyncio", workdir=tmp_path) as mesh:
        pids = mesh.pids
        assert set(pids) == {"envoy-a", "envoy-b", "app-a", "app-b"}
        assert len(set(pids.values())) == 4
        with open(f"/proc/{pids['envoy-a']}/comm") as comm:
            assert comm.read().strip() == "envoy"  # the real binary, not the Python launcher
        assert len(set(mesh.ports.values())) == len(mesh.ports)
        assert mesh.get("/a/1")[0] == 200
        processes = [mesh.envoy_a, mesh.envoy_b, mesh.app_a, mesh.app_b]
        # Envoy writes the inbound line once the response is done and flushes every 100 ms: a
        # SIGTERM right after the reply may come first.
        log_path = tmp_path / "envoy-a.access.log"
        deadline = time.monotonic() + 5
        while "GET /a/1 200" not in (log_path.read_text() if log_path.exists() else "") and time.monotonic() < deadline:
            time.sleep(0.05)

    assert all(p.proc.poll() is not None for p in processes)
    assert (tmp_path / "envoy-a.yaml").read_text().startswith("# envoy-a: generated by")
    access_log = (tmp_path / "envoy-a.access.log").read_text()
    assert "inbound " in access_log and "GET /a/1 200" in access_log
    assert "outbound " in access_log and "GET /b/1 200" in access_log


def test_a_sidecar_config_that_envoy_rejects_fails_start_with_envoys_reason(tmp_path):
    sidecar = EnvoySidecar("envoy-bad", workdir=tmp_path, collector_port=1, app_port=2)
    sidecar.config_yaml = lambda: "static_resources: {listeners: [{name: x}]}\n"  # no address
    with pytest.raises(RuntimeError, match="envoy-bad exited"), sidecar:
        pass
