"""ZipkinReceiver, driven by real HTTP POSTs of Zipkin v2 JSON, plain, gzip and chunked."""

from __future__ import annotations

import gzip
import http.client
import json
import threading
import urllib.error
import urllib.request

import pytest

from otel_ebpf.testing import ZipkinReceiver
from otel_ebpf.testing.zipkin_receiver import ZipkinSpan

# Two spans as Envoy's Zipkin tracer sends them (HTTP_JSON, shared_span_context false).
SERVER_SPAN = {
    "traceId": "2b0d0b214527787c5e4c0020e428d598",
    "id": "5e4c0020e428d598",
    "name": "ingress",
    "kind": "SERVER",
    "timestamp": 1795413637446537,
    "duration": 527,
    "localEndpoint": {"serviceName": "envoy-a", "ipv4": "127.0.0.1"},
    "tags": {"http.status_code": "200", "guid:x-request-id": "d65dba46-56e7-9bde-a0cc-d6db7d371c25"},
}
CLIENT_SPAN_64 = {
    "traceId": "32c32419f0d86bde",
    "id": "9b9b3d2e6045d755",
    "parentId": "32c32419f0d86bde",
    "name": "egress",
    "kind": "CLIENT",
    "timestamp": 1795413637071054,
    "duration": 423,
    "localEndpoint": {"serviceName": "envoy-a"},
    "remoteEndpoint": {"serviceName": "envoy-b"},
    "annotations": [{"timestamp": 1795413637071100, "value": "cs"}],
    "shared": True,
}


@pytest.fixture
def receiver():
    with ZipkinReceiver() as running:
        yield running


def _post(receiver, body: bytes, *, path="/api/v2/spans", headers=None) -> int:
    request = urllib.request.Request(
        receiver.endpoint + path,
        data=body,
        headers={"Content-Type": "application/json", **(headers or {})},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_a_json_post_is_accepted_and_decoded_into_frozen_spans(receiver):
    assert _post(receiver, json.dumps([SERVER_SPAN, CLIENT_SPAN_64]).encode()) == 202

    server, _client = receiver.wait_for_spans(2)
    assert server == ZipkinSpan(
        trace_id="2b0d0b214527787c5e4c0020e428d598",
        id="5e4c0020e428d598",
        parent_id="",
        name="ingress",
        kind="SERVER",
        timestamp_us=1795413637446537,
        duration_us=527,
        local_service="envoy-a",
        tags={"http.status_code": "200", "guid:x-request-id": "d65dba46-56e7-9bde-a0cc-d6db7d371c25"},
    )
    assert server.raw == SERVER_SPAN
    with pytest.raises(AttributeError):
        server.name = "changed"  # type: ignore[misc]


def test_64_bit_trace_ids_and_optional_fields_are_kept_as_sent(receiver):
    _post(receiver, json.dumps([CLIENT_SPAN_64]).encode())

    (client,) = receiver.wait_for_spans(1)
    assert client.trace_id == "32c32419f0d86bde"
    assert client.parent_id == "32c32419f0d86bde"
    assert client.shared is True
    assert client.remote_service == "envoy-b"
    assert client.annotations == [{"timestamp": 1795413637071100, "value": "cs"}]


def test_a_gzip_body_is_accepted(receiver):
    body = gzip.compress(json.dumps([SERVER_SPAN]).encode())
    assert _post(receiver, body, headers={"Content-Encoding": "gzip"}) == 202
    assert receiver.wait_for_spans(1)[0].name == "ingress"


def test_a_chunked_body_on_a_keep_alive_connection_is_accepted_like_envoy_sends_it(receiver):
    payload = json.dumps([SERVER_SPAN, CLIENT_SPAN_64]).encode()
    connection = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=5)
    try:
        for _ in range(2):  # the second request proves the connection stayed in step
            connection.putrequest("POST", "/api/v2/spans")
            connection.putheader("Content-Type", "application/json")
            connection.putheader("Transfer-Encoding", "chunked")
            connection.endheaders()
            for part in (payload[:10], payload[10:]):
                connection.send(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            connection.send(b"0\r\n\r\n")
            response = connection.getresponse()
            response.read()
            assert response.status == 202
    finally:
        connection.close()
    assert len(receiver.wait_for_spans(4)) == 4
    assert receiver.request_count == 2


@pytest.mark.parametrize(
    ("body", "headers", "path", "status"),
    [
        (b"not json", {}, "/api/v2/spans", 400),
        (b'{"traceId": "1"}', {}, "/api/v2/spans", 400),
        (b'[{"id": "1"}]', {}, "/api/v2/spans", 400),
        (b"\x1f\x8b broken", {"Content-Encoding": "gzip"}, "/api/v2/spans", 400),
        (b"[]", {"Content-Encoding": "br"}, "/api/v2/spans", 415),
        (b"[]", {"Content-Type": "application/x-protobuf"}, "/api/v2/spans", 415),
        (b"[]", {}, "/api/v1/spans", 404),
    ],
)
def test_malformed_requests_are_refused_and_nothing_is_kept(receiver, body, headers, path, status):
    assert _post(receiver, body, headers=headers, path=path) == status
    assert receiver.spans() == []
    assert receiver.request_count == 0


def test_wait_for_spans_filters_with_where_and_names_what_arrived_on_timeout(receiver):
    _post(receiver, json.dumps([SERVER_SPAN, CLIENT_SPAN_64]).encode())

    assert [s.kind for s in receiver.wait_for_spans(1, where=lambda s: s.kind == "CLIENT")] == ["CLIENT"]
    with pytest.raises(TimeoutError, match="envoy-a:SERVER:ingress"):
        receiver.wait_for_spans(1, timeout=0.1, where=lambda s: s.kind == "PRODUCER")


def test_wait_for_spans_wakes_up_when_spans_arrive_later(receiver):
    timer = threading.Timer(0.2, _post, (receiver, json.dumps([SERVER_SPAN]).encode()))
    timer.start()
    try:
        assert len(receiver.wait_for_spans(1, timeout=5)) == 1
    finally:
        timer.join()


def test_clear_forgets_spans_and_requests(receiver):
    _post(receiver, json.dumps([SERVER_SPAN]).encode())
    receiver.wait_for_spans(1)
    receiver.clear()
    assert receiver.spans() == []
    assert receiver.request_count == 0


def test_stop_is_idempotent_safe_before_start_and_keeps_the_spans():
    never_started = ZipkinReceiver()
    never_started.stop()
    never_started.stop()

    receiver = ZipkinReceiver().start()
    _post(receiver, json.dumps([SERVER_SPAN]).encode())
    receiver.wait_for_spans(1)
    endpoint = receiver.endpoint
    receiver.stop()
    receiver.stop()
    assert len(receiver.spans()) == 1
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(urllib.request.Request(endpoint + "/api/v2/spans", data=b"[]"), timeout=2)
    with pytest.raises(RuntimeError, match="already stopped"):
        receiver.start()


def test_endpoint_is_loopback_and_unavailable_before_start():
    receiver = ZipkinReceiver()
    with pytest.raises(RuntimeError, match="not started"):
        receiver.endpoint  # noqa: B018 - the property raises
    with receiver:
        assert receiver.endpoint == f"http://127.0.0.1:{receiver.port}"
