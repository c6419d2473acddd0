"""The direct OTLP encoder against the SDK's: decoded, the two requests are the same message."""

from __future__ import annotations

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from otel_ebpf.processinfo import ProcessInfoCache
from otel_ebpf.telemetry import otlp_fast
from otel_ebpf.telemetry.otlp_fast import FastOtlpGrpcSpanExporter, FastOtlpHttpSpanExporter, encode_trace_request
from otel_ebpf.telemetry.spans import SpanBuilder

from ..factories import make_exchange

SCOPE = InstrumentationScope("otel-ebpf", "0.1.0", "https://opentelemetry.io/schemas/1.44.0")
R1 = Resource({"service.name": "shop", "process.pid": 42, "host.name": "node-1"}, "https://x/1.44.0")
R2 = Resource({"service.name": "db", "k8s.pod.name": "db-0"})


def span(i: int, *, resource=R1, **kw) -> ReadableSpan:
    parent = kw.pop("parent", None)
    return ReadableSpan(
        name=kw.pop("name", f"GET /items/{i}"),
        context=SpanContext(0x1234 + i, 0x99 + i, False, TraceFlags(1), kw.pop("trace_state", None)),
        parent=parent, resource=resource, kind=kw.pop("kind", SpanKind.SERVER),
        attributes=kw.pop("attributes", {"http.request.method": "GET", "http.response.status_code": 200,
                                         "url.path": f"/items/{i}", "network.peer.port": 50000 + i}),
        status=kw.pop("status", Status(StatusCode.UNSET)), start_time=1_700_000_000_000_000_000 + i,
        end_time=1_700_000_000_020_000_000 + i, instrumentation_scope=kw.pop("scope", SCOPE), **kw)


def same(spans) -> None:
    ours = ExportTraceServiceRequest.FromString(encode_trace_request(spans))
    assert ours == encode_spans(spans)


def test_plain_spans_of_two_resources_encode_as_the_sdk_does():
    same([span(i, resource=R1 if i % 3 else R2) for i in range(20)])


def test_equal_resources_and_scopes_that_are_distinct_objects_are_grouped_as_the_sdk_groups_them():
    twin = Resource(dict(R1.attributes), R1.schema_url)
    scope_twin = InstrumentationScope(SCOPE.name, SCOPE.version, SCOPE.schema_url)
    spans = [span(0), span(1, resource=twin, scope=scope_twin), span(2, resource=R2), span(3, resource=twin)]
    same(spans)
    same_json(spans)


def test_every_attribute_type_parents_links_events_status_and_trace_state():
    remote = SpanContext(0xABC, 0xDEF, True, TraceFlags(1))
    local = SpanContext(0xABC, 0x777, False, TraceFlags(1))
    spans = [
        span(1, parent=remote, trace_state=TraceState([("vendor", "v1"), ("other", "x")]),
             attributes={"s": "ünïcode", "b": True, "f": False, "i": -5, "big": 2**62, "d": 1.5, "neg": -0.25,
                         "arr": ["a", "b"], "ints": [1, 2, 3], "bools": [True, False], "e": "", "z": 0},
             status=Status(StatusCode.ERROR, "boom"), kind=SpanKind.CLIENT,
             links=(Link(remote, {"otel_ebpf.link.reason": "envoy-egress"}), Link(local)),
             events=(Event("retry", {"attempt": 2}, timestamp=5),)),
        span(2, parent=local, status=Status(StatusCode.OK), kind=SpanKind.INTERNAL, attributes={}),
        span(3, scope=None),
    ]
    same(spans)


def test_agent_spans_from_the_span_builder_encode_as_the_sdk_does():
    builder = SpanBuilder(host_name="node-1", process_info=ProcessInfoCache(proc_root="/nonexistent"))
    spans = [builder.build(make_exchange(target=f"/users/{i}?x={i}", status=200 + i % 2 * 300)) for i in range(50)]
    same(spans)
    same(spans)  # the second time from the caches


def test_the_attribute_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(otlp_fast, "_MAX_CACHED_ATTRIBUTES", 10)
    otlp_fast._attr_cache.clear()
    same([span(i, attributes={"k": f"v{i}", "n": i}) for i in range(100)])
    assert otlp_fast._attr_cache and all(len(c) <= 10 for c in otlp_fast._attr_cache.values())


def test_ephemeral_port_pairs_stay_out_of_the_main_caches(monkeypatch):
    # One new network.peer.port per connection: in the main caches they would grow memory per
    # connection; they go to a small cache of recent pairs instead.
    monkeypatch.setattr(otlp_fast, "_MAX_RECENT_PAIRS", 8)
    otlp_fast._attr_cache.clear()
    otlp_fast._recent_pair_cache.clear()
    otlp_fast._json_text_attr_cache.clear()
    otlp_fast._json_text_recent_pairs.clear()
    spans = [span(i, attributes={"network.peer.port": 40000 + i, "big": 2**63 - 1, "http.response.status_code": 200,
                                 "rtt": 0.5 if i % 2 else -0.0, "n": 40000.0 if i % 3 else 40000})
             for i in range(30)]
    same(spans)
    same(spans)  # the second time partly from the recent-pair caches
    same_json(spans)
    same_json(spans)
    cached = [k for c in (*otlp_fast._attr_cache.values(), otlp_fast._json_text_attr_cache) for k in c]
    assert ("http.response.status_code", int, 200) in cached
    assert not [k for k in cached if k[0] in ("network.peer.port", "big", "rtt", "n")]
    for recent in (otlp_fast._json_text_recent_pairs, otlp_fast._recent_pair_cache[b"\x4a"]):  # span attributes
        assert 0 < len(recent) <= 8


def test_a_pair_shared_by_resource_span_event_and_link_is_encoded_for_each_field():
    # The same (key, value) in four places, each a different protobuf field: the cached bytes
    # of one must never be reused for another.
    pair = {"service.name": "shop", "process.pid": 42}
    remote = SpanContext(0xABC, 0xDEF, True, TraceFlags(1))
    spans = [span(i, attributes=dict(pair), links=(Link(remote, dict(pair)),),
                  events=(Event("e", dict(pair), timestamp=7),)) for i in range(3)]
    same(spans)
    same(spans)


@pytest.mark.parametrize("exporter_class", [FastOtlpGrpcSpanExporter, FastOtlpHttpSpanExporter])
def test_the_fast_exporters_deliver_to_a_real_otlp_receiver(exporter_class):
    from otel_ebpf.testing import OtlpReceiver  # noqa: PLC0415

    with OtlpReceiver() as otlp:
        if exporter_class is FastOtlpGrpcSpanExporter:
            exporter = exporter_class(endpoint=otlp.grpc_endpoint, insecure=True)
        else:
            exporter = exporter_class(endpoint=otlp.http_endpoint.rstrip("/") + "/v1/traces")
        try:
            assert exporter.export([span(i) for i in range(5)]).name == "SUCCESS"
            received = otlp.wait_for_spans(5, timeout=10)
        finally:
            exporter.shutdown()
    assert sorted(s.name for s in received) == sorted(f"GET /items/{i}" for i in range(5))
    assert all(s.resource["service.name"] == "shop" for s in received)


def same_json(spans) -> None:
    from otel_ebpf.telemetry.jsonfile import encode_otlp_json  # noqa: PLC0415
    import json  # noqa: PLC0415

    expected = json.loads(encode_otlp_json(encode_spans(spans)))
    text = otlp_fast.trace_request_json_text(spans)  # what the file exporter writes
    assert "\n" not in text
    assert json.loads(text) == expected


def test_the_json_document_is_what_the_protobuf_route_gives():
    remote = SpanContext(0xABC, 0xDEF, True, TraceFlags(1))
    local = SpanContext(0xABC, 0x777, False, TraceFlags(1))
    same_json([span(i, resource=R1 if i % 3 else R2) for i in range(10)])
    same_json([
        span(1, parent=remote, trace_state=TraceState([("vendor", "v1")]),
             attributes={"s": "ünïcode", "b": True, "i": -5, "big": 2**62, "d": 1.5, "arr": ["a", "b"],
                         "ints": [1, 2], "e": "", "z": 0},
             status=Status(StatusCode.ERROR, "boom"), kind=SpanKind.CLIENT,
             links=(Link(remote, {"reason": "x"}), Link(local)), events=(Event("retry", {"n": 2}, timestamp=5),)),
        span(2, parent=local, status=Status(StatusCode.OK), kind=SpanKind.INTERNAL, attributes={}),
        span(3, scope=None),
        span(4, name='GET "/ünï\\code"', status=Status(StatusCode.ERROR), attributes={"q": 'a"b\\c\u2028'}),
    ])
    same_json([span(5, status=Status(StatusCode.ERROR, "boom"), trace_state=TraceState([("k", "v")]))])
    builder = SpanBuilder(host_name="node-1", process_info=ProcessInfoCache(proc_root="/nonexistent"))
    same_json([builder.build(make_exchange(target=f"/users/{i}")) for i in range(20)])


def test_spans_made_by_the_sdk_tracer_with_dropped_attributes_encode_as_the_sdk_does():
    # The SDK's own spans (BoundedAttributes, BoundedList events and links), read through their
    # fields by the encoder, with attributes over the limit dropped and counted.
    from opentelemetry.sdk.trace import SpanLimits, TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=R1, span_limits=SpanLimits(max_span_attributes=3))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("otel-ebpf-test", "1.0")
    with tracer.start_as_current_span("outer", attributes={"a": 1, "b": "x", "c": 2.5, "d": True, "e": 40000}) as s:
        s.add_event("retry", {"attempt": 2})
        with tracer.start_as_current_span("inner", links=[Link(s.get_span_context(), {"why": "test"})]):
            pass
    spans = memory.get_finished_spans()
    assert spans[1].dropped_attributes == 2
    same(spans)
    same_json(spans)
