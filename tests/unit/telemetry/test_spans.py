from __future__ import annotations

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.semconv._incubating.attributes.host_attributes import HOST_NAME
from opentelemetry.semconv._incubating.attributes.process_attributes import (
    PROCESS_COMMAND_LINE,
    PROCESS_EXECUTABLE_NAME,
    PROCESS_EXECUTABLE_PATH,
    PROCESS_PID,
)
from opentelemetry.semconv.attributes.http_attributes import HTTP_REQUEST_METHOD
from opentelemetry.semconv.attributes.service_attributes import SERVICE_NAME
from opentelemetry.semconv.attributes.telemetry_attributes import TELEMETRY_DISTRO_NAME
from opentelemetry.trace import SpanKind
from opentelemetry.trace.status import StatusCode

from otel_ebpf.processinfo import ProcessInfoCache
from otel_ebpf.records import Role
from otel_ebpf.telemetry.semantics import OTEL_EBPF_SERVICE_NAME, SCHEMA_URL, describe
from otel_ebpf.telemetry.spans import SpanBuilder

from ..factories import T0, make_exchange, make_fake_proc

TRACE_HEX = "0af7651916cd43dd8448eb211c80319c"
SPAN_HEX = "b7ad6b7169203331"


class CountingIds(IdGenerator):
    def __init__(self) -> None:
        self.n = 0

    def generate_span_id(self) -> int:
        self.n += 1
        return self.n

    def generate_trace_id(self) -> int:
        self.n += 1
        return 0xABC0 + self.n


@pytest.fixture
def proc(tmp_path):
    make_fake_proc(
        tmp_path,
        4242,
        ["python3", "shop.py", "--token", "s3cret"],
        exe="/usr/bin/python3.11",
        environ={"OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=prod,team=web"},
    )
    make_fake_proc(tmp_path, 777, ["/usr/sbin/nginx"], exe="/usr/sbin/nginx", environ={"OTEL_SERVICE_NAME": "edge"})
    return ProcessInfoCache(proc_root=str(tmp_path))


def _builder(proc, **kwargs):
    kwargs.setdefault("host_name", "node-1")
    return SpanBuilder(process_info=proc, **kwargs)


def test_a_built_span_is_a_finished_readable_span_of_the_exchange(proc):
    ex = make_exchange(route="/users/{id}", duration_ns=7_000)
    span = _builder(proc).build(ex)
    assert isinstance(span, ReadableSpan)
    assert span.name == "GET /users/{id}"
    assert span.kind is SpanKind.SERVER
    assert span.start_time == T0
    assert span.end_time == T0 + 7_000
    assert span.status.status_code is StatusCode.UNSET
    assert span.attributes[HTTP_REQUEST_METHOD] == "GET"
    assert span.instrumentation_scope.name == "otel_ebpf"
    assert span.instrumentation_scope.schema_url == SCHEMA_URL


def test_without_traceparent_the_span_is_a_sampled_root_of_a_new_trace(proc):
    builder = _builder(proc, id_generator=CountingIds())
    a = builder.build(make_exchange())
    b = builder.build(make_exchange())
    assert a.parent is None
    assert a.context.trace_flags.sampled
    assert a.context.trace_id != b.context.trace_id
    assert a.context.span_id != b.context.span_id
    assert not a.context.is_remote


def test_a_traceparent_makes_the_span_a_child_of_the_remote_parent(proc):
    ex = make_exchange(
        headers=(("traceparent", f"00-{TRACE_HEX}-{SPAN_HEX}-01"), ("tracestate", "rojo=00f067aa0ba902b7"))
    )
    span = _builder(proc).build(ex)
    assert span.context.trace_id == int(TRACE_HEX, 16)
    assert span.parent.trace_id == int(TRACE_HEX, 16)
    assert span.parent.span_id == int(SPAN_HEX, 16)
    assert span.parent.is_remote
    assert span.context.span_id != int(SPAN_HEX, 16)
    assert dict(span.context.trace_state) == {"rojo": "00f067aa0ba902b7"}
    assert span.context.trace_flags.sampled


def test_an_unsampled_parent_gives_an_unsampled_span(proc):
    span = _builder(proc).build(make_exchange(headers=(("traceparent", f"00-{TRACE_HEX}-{SPAN_HEX}-00"),)))
    assert not span.context.trace_flags.sampled


def test_errors_and_client_kinds_come_from_the_semantics(proc):
    span = _builder(proc).build(make_exchange(role=Role.CLIENT, status=404))
    assert span.kind is SpanKind.CLIENT
    assert span.status.status_code is StatusCode.ERROR


def test_an_end_before_the_start_is_clamped(proc):
    span = _builder(proc).build(make_exchange(duration_ns=-5))
    assert span.end_time == span.start_time


def test_a_precomputed_description_is_used_as_given(proc):
    ex = make_exchange()
    sem = describe(ex)
    sem.name = "custom"
    assert _builder(proc).build(ex, semantics=sem).name == "custom"


def test_each_process_gets_its_own_resource_with_its_identity(proc):
    builder = _builder(
        proc,
        resource_attributes={"k8s.cluster.name": "c1", SERVICE_NAME: "agent-svc", "team": "platform"},
    )
    span = builder.build(make_exchange(pid=4242))
    attrs = dict(span.resource.attributes)
    assert attrs[SERVICE_NAME] == "shop"
    assert attrs[PROCESS_PID] == 4242
    assert attrs[PROCESS_EXECUTABLE_NAME] == "python3.11"
    assert attrs[PROCESS_EXECUTABLE_PATH] == "/usr/bin/python3.11"
    assert attrs[PROCESS_COMMAND_LINE] == "python3 shop.py --token REDACTED"
    assert attrs[HOST_NAME] == "node-1"
    assert attrs[TELEMETRY_DISTRO_NAME] == "otel-ebpf"
    assert attrs["k8s.cluster.name"] == "c1"  # the agent's attributes are merged under
    assert attrs["team"] == "web"  # ... and the process's own win over them
    assert attrs["deployment.environment.name"] == "prod"
    assert span.resource.schema_url == SCHEMA_URL
    assert PROCESS_PID not in span.attributes

    other = builder.build(make_exchange(pid=777)).resource
    assert other.attributes[SERVICE_NAME] == "edge"
    assert other is not span.resource


def test_resources_are_cached_per_pid(proc):
    builder = _builder(proc)
    a = builder.build(make_exchange(pid=4242)).resource
    b = builder.build(make_exchange(pid=4242)).resource
    assert a is b
    assert hash(a) == hash(b)


def test_the_resource_cache_is_bounded_and_counts_evictions(proc):
    builder = _builder(proc, max_resources=1)
    builder.build(make_exchange(pid=4242))
    builder.build(make_exchange(pid=777))
    builder.build(make_exchange(pid=4242))
    assert builder.resource_evictions == 2
    assert builder.counters()["otel_ebpf.spans.resource_evictions"] == 2


def test_a_gone_process_still_gets_a_resource(proc):
    span = _builder(proc).build(make_exchange(pid=31337))
    assert span.resource.attributes[SERVICE_NAME] == "unknown_service"
    assert span.resource.attributes[PROCESS_EXECUTABLE_NAME] == "unknown"


def test_without_per_process_resources_the_identity_goes_on_span_attributes(proc):
    builder = _builder(proc, per_process_resource=False, resource_attributes={"k8s.cluster.name": "c1"})
    a = builder.build(make_exchange(pid=4242))
    b = builder.build(make_exchange(pid=777))
    assert a.resource is b.resource is builder.agent_resource
    assert a.resource.attributes[SERVICE_NAME] == "otel-ebpf"
    assert a.resource.attributes["k8s.cluster.name"] == "c1"
    assert a.attributes[PROCESS_PID] == 4242
    assert a.attributes[PROCESS_EXECUTABLE_NAME] == "python3.11"
    assert a.attributes[OTEL_EBPF_SERVICE_NAME] == "shop"
    assert b.attributes[OTEL_EBPF_SERVICE_NAME] == "edge"
    assert builder.resource_for(4242) is builder.agent_resource


def test_the_agent_resource_keeps_a_configured_service_name(proc):
    builder = _builder(proc, resource_attributes={SERVICE_NAME: "my-agent"})
    assert builder.agent_resource.attributes[SERVICE_NAME] == "my-agent"
    assert builder.agent_resource.attributes[HOST_NAME] == "node-1"


def test_the_otlp_encoder_puts_each_process_in_its_own_resource_spans(proc):
    builder = _builder(proc)
    spans = [
        builder.build(make_exchange(pid=4242)),
        builder.build(make_exchange(pid=777)),
        builder.build(make_exchange(pid=4242, headers=(("traceparent", f"00-{TRACE_HEX}-{SPAN_HEX}-01"),))),
    ]
    request = encode_spans(spans)
    assert len(request.resource_spans) == 2
    by_service = {}
    for rs in request.resource_spans:
        attrs = {kv.key: kv.value for kv in rs.resource.attributes}
        by_service[attrs[SERVICE_NAME].string_value] = rs
        assert rs.schema_url == SCHEMA_URL
        assert rs.scope_spans[0].scope.name == "otel_ebpf"
    assert len(by_service["shop"].scope_spans[0].spans) == 2
    assert len(by_service["edge"].scope_spans[0].spans) == 1
    child = by_service["shop"].scope_spans[0].spans[1]
    assert child.trace_id.hex() == TRACE_HEX
    assert child.parent_span_id.hex() == SPAN_HEX
    assert child.flags & 0x200  # SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK


def test_equal_resources_from_separate_builders_encode_as_one(proc):
    spans = [_builder(proc).build(make_exchange(pid=4242)) for _ in range(3)]
    assert len({id(s.resource) for s in spans}) == 3
    assert len(encode_spans(spans).resource_spans) == 1


def test_the_sdk_in_memory_exporter_accepts_built_spans(proc):
    exporter = InMemorySpanExporter()
    span = _builder(proc).build(make_exchange())
    assert exporter.export([span]) is SpanExportResult.SUCCESS
    assert exporter.get_finished_spans()[0] is span
    assert '"name": "GET"' in span.to_json()
