"""gRPC exchanges described with the RPC semantic conventions."""

from __future__ import annotations

import dataclasses

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import SpanKind, StatusCode

from otel_ebpf.records import HttpResponse, Role
from otel_ebpf.telemetry import rpc
from otel_ebpf.telemetry.metrics import HttpMetricsAggregator
from otel_ebpf.telemetry.semantics import describe

from ..factories import make_exchange

GRPC_HEADERS = (("host", "greeter:50051"), ("content-type", "application/grpc"), ("te", "trailers"))


def grpc_exchange(*, role=Role.SERVER, status="0", http_status=200, target="/helloworld.Greeter/SayHello",
                  trailers_only=False, response=True, warnings=()):
    ex = make_exchange(method="POST", target=target, version="2", headers=GRPC_HEADERS, role=role,
                       local=("127.0.0.1", 50051) if role == Role.SERVER else ("127.0.0.1", 40000),
                       remote=("127.0.0.1", 40000) if role == Role.SERVER else ("127.0.0.1", 50051))
    headers = (("content-type", "application/grpc"),)
    trailers = () if status is None else (("grpc-status", status),)
    if trailers_only:
        headers, trailers = headers + trailers, ()
    resp = HttpResponse(http_status, "", "2", headers, 12, trailers) if response else None
    return dataclasses.replace(ex, protocol="grpc", response=resp, warnings=warnings)


def test_a_unary_call_is_named_by_its_fully_qualified_method_with_rpc_attributes():
    sem = describe(grpc_exchange())
    assert sem.name == "helloworld.Greeter/SayHello" and sem.kind == SpanKind.SERVER
    a = sem.attributes
    assert a["rpc.system.name"] == "grpc" and a["rpc.method"] == "helloworld.Greeter/SayHello"
    assert a["rpc.response.status_code"] == "OK" and a["network.protocol.version"] == "2"
    assert a["server.address"] == "greeter" and a["server.port"] == 50051
    assert sem.status.status_code == StatusCode.UNSET and "error.type" not in a
    assert sem.metrics == ("rpc.server.call.duration",)
    assert sem.metric_attributes["rpc.method"] == "helloworld.Greeter/SayHello"


@pytest.mark.parametrize(("code", "name", "server_error"), [
    ("5", "NOT_FOUND", False), ("3", "INVALID_ARGUMENT", False), ("2", "UNKNOWN", True),
    ("4", "DEADLINE_EXCEEDED", True), ("13", "INTERNAL", True), ("14", "UNAVAILABLE", True),
    ("15", "DATA_LOSS", True), ("16", "UNAUTHENTICATED", False)])
def test_server_spans_are_errors_only_for_the_grpc_server_error_codes_and_clients_for_any_non_ok(
        code, name, server_error):
    server = describe(grpc_exchange(status=code))
    client = describe(grpc_exchange(status=code, role=Role.CLIENT))
    assert server.attributes["rpc.response.status_code"] == client.attributes["rpc.response.status_code"] == name
    assert (server.status.status_code == StatusCode.ERROR) is server_error
    assert client.status.status_code == StatusCode.ERROR and client.attributes["error.type"] == name
    assert client.metrics == ("rpc.client.call.duration",)


def test_a_trailers_only_response_carries_the_status_in_its_headers():
    assert describe(grpc_exchange(status="7", trailers_only=True)).attributes["rpc.response.status_code"] == \
        "PERMISSION_DENIED"


def test_without_grpc_status_the_http_status_and_stream_resets_decide():
    assert describe(grpc_exchange(status=None, http_status=503)).attributes["rpc.response.status_code"] == \
        "UNAVAILABLE"
    cancelled = grpc_exchange(status=None, response=False, role=Role.CLIENT, warnings=("stream reset: CANCEL",))
    assert describe(cancelled).attributes["rpc.response.status_code"] == "CANCELLED"
    assert describe(grpc_exchange(status="garbage")).attributes["rpc.response.status_code"] == "UNKNOWN"


def test_an_unimplemented_method_on_the_server_is_reported_as_other():
    sem = describe(grpc_exchange(status="12"))
    assert sem.attributes["rpc.method"] == "_OTHER" and sem.name == "grpc"
    assert sem.attributes["rpc.method_original"] == "helloworld.Greeter/SayHello"
    odd = describe(grpc_exchange(target="/not-a-grpc-path"))
    assert odd.attributes["rpc.method"] == "_OTHER"


def test_rpc_dup_adds_the_older_experimental_attributes_and_millisecond_metrics(monkeypatch):
    monkeypatch.setattr(rpc, "_DUP", True)
    sem = describe(grpc_exchange(status="5"))
    assert sem.attributes["rpc.system"] == "grpc" and sem.attributes["rpc.service"] == "helloworld.Greeter"
    assert sem.attributes["rpc.grpc.status_code"] == 5
    assert sem.metrics == ("rpc.server.call.duration", "rpc.server.duration")
    assert rpc.rpc_dup_enabled({"OTEL_SEMCONV_STABILITY_OPT_IN": "http, rpc/dup"})
    assert not rpc.rpc_dup_enabled({"OTEL_SEMCONV_STABILITY_OPT_IN": "rpc"})


def test_rpc_durations_are_aggregated_in_seconds_and_the_old_ones_in_milliseconds(monkeypatch):
    monkeypatch.setattr(rpc, "_DUP", True)
    agg = HttpMetricsAggregator()
    ex = grpc_exchange()  # 20 ms long
    sem = describe(ex)
    agg.record(ex, Resource({"service.name": "greeter"}), attributes=sem.metric_attributes, metrics=sem.metrics)
    data = agg.collect()
    metrics = {m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    seconds = metrics["rpc.server.call.duration"]
    millis = metrics["rpc.server.duration"]
    assert seconds.unit == "s" and millis.unit == "ms"
    assert seconds.data.data_points[0].sum == pytest.approx(0.02)
    assert millis.data.data_points[0].sum == pytest.approx(20.0)
    assert millis.data.data_points[0].explicit_bounds[-1] == 10000.0


def test_streaming_message_counts_are_kept_under_the_project_prefix():
    ex = dataclasses.replace(grpc_exchange(), rpc_messages=(4, 1))
    a = describe(ex).attributes
    assert a["otel_ebpf.rpc.request.messages"] == 4 and a["otel_ebpf.rpc.response.messages"] == 1
