"""OTLP trace requests encoded straight to protobuf bytes, and the SDK's OTLP exporters sending them.

Usage::

    data = encode_trace_request(spans)          # == encode_spans(spans).SerializeToString(), semantically
    exporter = FastOtlpGrpcSpanExporter(endpoint="http://collector:4317", insecure=True)
    exporter.export(spans)                      # the SDK exporter: retries, headers, TLS, compression, env

Why: the SDK's encoder builds a protobuf object per span, per attribute and per value and then
serialises them; profiled on the agent's path it is the largest cost (about 110 µs per HTTP span
here, more than capture and parsing together). This writer emits the wire format directly and
caches what repeats: each Resource and scope once per batch (kept across batches by identity), and
each ``(key, value)`` attribute pair whose value is a str, bool, int or float (methods, schemes,
status codes, server addresses, protocol versions) in a bounded table. Nothing about what is sent
changes: a test decodes both encodings and compares them field by field.

The exporters (:mod:`otel_ebpf.telemetry.otlp_exporters`, also importable from here) are the SDK's own OTLP exporters (gRPC and HTTP/protobuf) with only the encoding
swapped, so their configuration (``OTEL_EXPORTER_OTLP_*``), retries, TLS, headers and compression
all still apply. The swap relies on internals of the pinned SDK version (1.45.x); a test guards it.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan

__all__ = ["FastOtlpGrpcSpanExporter", "FastOtlpHttpSpanExporter", "encode_trace_request"]

_pack_d = struct.Struct("<d").pack
_pack_q = struct.Struct("<Q").pack
_pack_i = struct.Struct("<I").pack

_MAX_CACHED_ATTRIBUTES = 16384  # per cache: ~3 MiB at most
# Int-valued pairs go to the main caches only below this: above it are ephemeral ports
# (client.port, network.peer.port), sizes and ids, a new pair per connection or per request, which
# would fill them with pairs seldom seen twice (~170 bytes per tracked connection). They, and
# float pairs (RTTs), have a small cache of their own instead, which keeps the pairs of the
# connections active now.
_CACHED_INT_LIMIT = 32768
_MAX_RECENT_PAIRS = 1024
# per field tag: (key, value type, value) -> the encoded field
_attr_cache: dict[bytes, dict[tuple[str, type, Any], bytes]] = {}
# per field tag: (key, int or float, value) -> the encoded field, for ints >= _CACHED_INT_LIMIT and floats
_recent_pair_cache: dict[bytes, dict[tuple[str, type, int | float], bytes]] = {}
_pair_encoders: dict[bytes, Any] = {}  # per field tag: (key, value) -> the encoded field
_resource_cache: dict[int, tuple[object, bytes]] = {}
_scope_cache: dict[int, tuple[object, bytes]] = {}

_FLAGS_HAS_IS_REMOTE = 0x100
_FLAGS_IS_REMOTE = 0x200


def _varint(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _ld(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: tag, length, payload."""
    n = len(payload)
    return tag + (bytes((n,)) if n < 0x80 else _varint(n)) + payload


def _any_value(value: Any) -> bytes:
    """The payload of an AnyValue message."""
    if isinstance(value, str):
        return _ld(b"\x0a", value.encode("utf-8", "surrogatepass"))
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, int):
        return b"\x18" + _varint(value & 0xFFFFFFFFFFFFFFFF)
    if isinstance(value, float):
        return b"\x21" + _pack_d(value)
    if isinstance(value, bytes):
        return _ld(b"\x3a", value)
    if isinstance(value, Mapping):
        return _ld(b"\x32", b"".join(_ld(b"\x0a", _key_value(str(k), v)) for k, v in value.items()))
    if isinstance(value, Sequence):
        return _ld(b"\x2a", b"".join(_ld(b"\x0a", _any_value(v)) for v in value))
    if value is None:
        return b""
    raise TypeError(f"invalid attribute value type {type(value).__name__}")


def _key_value(key: str, value: Any) -> bytes:
    return _ld(b"\x0a", key.encode("utf-8", "surrogatepass")) + _ld(b"\x12", _any_value(value))


def _cached_pairs(attributes, cache: dict, recent: dict, encode) -> list:
    """``encode(key, value)`` of every attribute, in order, from ``cache`` (str, bool and small int
    values) or ``recent`` (larger ints and floats, see _CACHED_INT_LIMIT) when seen before. Pairs
    of other types are encoded each time; one that cannot be encoded (TypeError) is left out, as
    the SDK encoder leaves it out. The encoders of every OTLP form share this loop."""
    parts = []
    for key, value in attributes.items():
        kind = type(value)
        if kind is str or kind is bool or (kind is int and value < _CACHED_INT_LIMIT):
            store = cache
        elif kind is int or (kind is float and value):  # 0.0 == -0.0: not cached
            store = recent
        else:
            try:
                parts.append(encode(key, value))
            except TypeError:
                pass
            continue
        ck = (key, kind, value)  # the kind too: 1 == True, 40000 == 40000.0
        encoded = store.get(ck)
        if encoded is None:
            encoded = encode(key, value)
            if len(store) >= (_MAX_CACHED_ATTRIBUTES if store is cache else _MAX_RECENT_PAIRS):
                store.clear()
            store[ck] = encoded
        parts.append(encoded)
    return parts


def _tagged_pair(tag: bytes, key: str, value: Any) -> bytes:
    return _ld(tag, _key_value(key, value))


def _attributes(tag: bytes, attributes) -> bytes:
    """Every attribute as a repeated KeyValue field ``tag``, cached per field tag (the same pair is
    a different field in a Resource, a span, an event or a link)."""
    if not attributes:
        return b""
    cache = _attr_cache.get(tag)
    if cache is None:
        cache = _attr_cache[tag] = {}
        _recent_pair_cache[tag] = {}
        _pair_encoders[tag] = partial(_tagged_pair, tag)
    return b"".join(_cached_pairs(attributes, cache, _recent_pair_cache[tag], _pair_encoders[tag]))


def _cached(cache: dict, obj, encode) -> bytes:
    hit = cache.get(id(obj))
    if hit is not None and hit[0] is obj:
        return hit[1]
    encoded = encode(obj)
    if len(cache) > 4096:
        cache.clear()
    cache[id(obj)] = (obj, encoded)
    return encoded


def _resource(resource) -> bytes:
    return _attributes(b"\x0a", resource.attributes)


def _scope(scope) -> bytes:
    if scope is None:
        return b""
    out = b""
    if scope.name:
        out += _ld(b"\x0a", scope.name.encode())
    if scope.version:
        out += _ld(b"\x12", scope.version.encode())
    return out + _attributes(b"\x1a", scope.attributes)


def _trace_state(ts) -> bytes:
    if not ts:
        return b""
    text = ",".join(f"{k}={v}" for k, v in ts.items())
    return text.encode()


def _fields(span):
    """(context, parent, name, kind, start, end, attributes, dropped attributes, events, links,
    status) of ``span``. For the SDK's spans, read from their fields (the SDK is pinned): its
    properties copy on every access (a MappingProxyType for attributes, tuples for events and
    links) and ``dropped_attributes`` is an isinstance check, ~1 µs a span in all."""
    if isinstance(span, ReadableSpan):
        attributes = span._attributes
        if attributes is None:
            attributes = {}
        dropped = 0 if type(attributes) is dict else getattr(attributes, "dropped", 0)
        return (span._context, span._parent, span._name, span._kind, span._start_time, span._end_time,
                attributes, dropped, span._events, span._links, span._status)
    return (span.context, span.parent, span.name, span.kind, span.start_time, span.end_time, span.attributes,
            span.dropped_attributes, span.events, span.links, span.status)


_kind_fields: dict[object, bytes] = {}  # SpanKind -> the encoded kind field
_status_fields: dict[tuple[int, str | None], bytes] = {}  # (code, description) -> the encoded status field


def _span(span: ReadableSpan) -> bytes:
    ctx, parent, name, kind, start, end, attributes, dropped, events, links, status = _fields(span)
    out = [b"\x0a\x10", ctx.trace_id.to_bytes(16, "big"), b"\x12\x08", ctx.span_id.to_bytes(8, "big")]
    if ctx.trace_state:
        out.append(_ld(b"\x1a", _trace_state(ctx.trace_state)))
    flags = _FLAGS_HAS_IS_REMOTE
    if parent is not None:
        out.append(b"\x22\x08")
        out.append(parent.span_id.to_bytes(8, "big"))
        if parent.is_remote:
            flags |= _FLAGS_IS_REMOTE
    out.append(_ld(b"\x2a", name.encode("utf-8", "surrogatepass")))
    kind_field = _kind_fields.get(kind)
    if kind_field is None:
        kind_field = _kind_fields[kind] = b"\x30" + bytes((kind.value + 1,))
    out.append(kind_field)
    out.append(b"\x39" + _pack_q(start or 0))
    out.append(b"\x41" + _pack_q(end or 0))
    out.append(_attributes(b"\x4a", attributes))
    if dropped:
        out.append(b"\x50" + _varint(dropped))
    for event in events:
        ev = _ld(b"\x12", event.name.encode()) if event.name else b""
        ev = b"\x09" + _pack_q(event.timestamp or 0) + ev + _attributes(b"\x1a", event.attributes)
        out.append(_ld(b"\x5a", ev))
    for link in links:
        lc = link.context
        lk = b"\x0a\x10" + lc.trace_id.to_bytes(16, "big") + b"\x12\x08" + lc.span_id.to_bytes(8, "big")
        lk += _attributes(b"\x22", link.attributes)
        link_flags = _FLAGS_HAS_IS_REMOTE | (_FLAGS_IS_REMOTE if lc.is_remote else 0)
        lk += b"\x35" + _pack_i(link_flags)
        out.append(_ld(b"\x6a", lk))
    if status is not None:
        sk = (status.status_code.value, status.description)
        st = _status_fields.get(sk)
        if st is None:
            st = b""
            if status.description:
                st += _ld(b"\x12", status.description.encode("utf-8", "surrogatepass"))
            if sk[0]:
                st += b"\x18" + bytes((sk[0],))
            st = _ld(b"\x7a", st)
            if len(_status_fields) < 256:  # descriptions are few (error reasons), but bounded
                _status_fields[sk] = st
        out.append(st)
    out.append(b"\x85\x01" + _pack_i(flags))
    return b"".join(out)


def _group(spans: Sequence[ReadableSpan]) -> list[tuple[object, list[tuple[object, list[ReadableSpan]]]]]:
    """Spans by Resource, then by scope, in first-appearance order. Grouped by identity first (the
    agent reuses one Resource object per process), then equal objects are merged, as the SDK
    encoder groups by equality."""
    by_id: dict[int, tuple[object, dict[int, tuple[object, list[ReadableSpan]]]]] = {}
    for span in spans:
        resource = span.resource
        entry = by_id.get(id(resource))
        if entry is None:
            entry = by_id[id(resource)] = (resource, {})
        scope = span.instrumentation_scope
        sentry = entry[1].get(id(scope))
        if sentry is None:
            sentry = entry[1][id(scope)] = (scope, [])
        sentry[1].append(span)
    groups: list[tuple[object, list[tuple[object, list[ReadableSpan]]]]] = []
    for resource, scopes in by_id.values():
        target = next((g for g in groups if g[0] is resource or g[0] == resource), None)
        if target is None:
            target = (resource, [])
            groups.append(target)
        for scope, members in scopes.values():
            same = next((sc for sc in target[1] if sc[0] is scope or sc[0] == scope), None)
            if same is None:
                target[1].append((scope, list(members)))
            else:
                same[1].extend(members)
    return groups


def encode_trace_request(spans: Sequence[ReadableSpan]) -> bytes:
    """An ExportTraceServiceRequest holding ``spans``, grouped by Resource then scope (in first
    appearance order, as the SDK encoder groups them)."""
    out = []
    for resource, scopes in _group(spans):
        body = [_ld(b"\x0a", _cached(_resource_cache, resource, _resource))]
        for scope, members in scopes:
            # an absent scope is sent as an empty one, as the SDK encoder does
            scope_spans = b"\x0a\x00" if scope is None else _ld(b"\x0a", _cached(_scope_cache, scope, _scope))
            scope_spans += b"".join([_ld(b"\x12", _span(span)) for span in members])
            schema = getattr(scope, "schema_url", None)
            if schema:
                scope_spans += _ld(b"\x1a", schema.encode())
            body.append(_ld(b"\x12", scope_spans))
        if resource.schema_url:
            body.append(_ld(b"\x1a", resource.schema_url.encode()))
        out.append(_ld(b"\x0a", b"".join(body)))
    return b"".join(out)


def __getattr__(name: str):
    # The exporters live in otlp_exporters, which imports the SDK's OTLP exporters (grpc alone is
    # about 16 MiB of RSS): a file-only configuration that encodes JSON never loads them.
    if name in ("FastOtlpGrpcSpanExporter", "FastOtlpHttpSpanExporter"):
        from otel_ebpf.telemetry import otlp_exporters  # noqa: PLC0415

        return getattr(otlp_exporters, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------------------------------------
# OTLP/JSON: the parts of the request as JSON-ready dicts (ids as hex, 64-bit integers as strings,
# enums as integers, lowerCamelCase), as json_format.MessageToDict gives them; the text writer
# below renders them (and caches the renderings).
# ---------------------------------------------------------------------------------------------

_json_attr_cache: dict[tuple[str, type, Any], dict] = {}
_json_recent_pairs: dict[tuple[str, type, int | float], dict] = {}


def _json_value(value: Any) -> dict:
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return {"doubleValue": "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")}
        return {"doubleValue": value}
    if isinstance(value, bytes):
        import base64  # noqa: PLC0415 -- rare

        return {"bytesValue": base64.b64encode(value).decode("ascii")}
    if isinstance(value, Mapping):
        return {"kvlistValue": {"values": [{"key": str(k), "value": _json_value(v)} for k, v in value.items()]}}
    if isinstance(value, Sequence):
        return {"arrayValue": {"values": [_json_value(v) for v in value]}}
    if value is None:
        return {}
    raise TypeError(f"invalid attribute value type {type(value).__name__}")


def _json_pair(key: str, value: Any) -> dict:
    return {"key": key, "value": _json_value(value)}


def _json_attributes(attributes) -> list[dict]:
    return _cached_pairs(attributes, _json_attr_cache, _json_recent_pairs, _json_pair)


def _json_span(span: ReadableSpan) -> dict:
    ctx = span.context
    parent = span.parent
    doc: dict[str, Any] = {"traceId": f"{ctx.trace_id:032x}", "spanId": f"{ctx.span_id:016x}"}
    ts = _trace_state(ctx.trace_state)
    if ts:
        doc["traceState"] = ts.decode()
    flags = _FLAGS_HAS_IS_REMOTE
    if parent is not None:
        doc["parentSpanId"] = f"{parent.span_id:016x}"
        if parent.is_remote:
            flags |= _FLAGS_IS_REMOTE
    doc["name"] = span.name
    doc["kind"] = span.kind.value + 1
    doc["startTimeUnixNano"] = str(span.start_time or 0)
    doc["endTimeUnixNano"] = str(span.end_time or 0)
    if span.attributes:
        doc["attributes"] = _json_attributes(span.attributes)
    if span.dropped_attributes:
        doc["droppedAttributesCount"] = span.dropped_attributes
    if span.events:
        events = []
        for event in span.events:
            ev: dict[str, Any] = {"timeUnixNano": str(event.timestamp or 0)}
            if event.name:
                ev["name"] = event.name
            if event.attributes:
                ev["attributes"] = _json_attributes(event.attributes)
            events.append(ev)
        doc["events"] = events
    if span.links:
        links = []
        for link in span.links:
            lc = link.context
            lk: dict[str, Any] = {"traceId": f"{lc.trace_id:032x}", "spanId": f"{lc.span_id:016x}"}
            if link.attributes:
                lk["attributes"] = _json_attributes(link.attributes)
            lk["flags"] = _FLAGS_HAS_IS_REMOTE | (_FLAGS_IS_REMOTE if lc.is_remote else 0)
            links.append(lk)
        doc["links"] = links
    status = span.status
    if status is not None:
        st: dict[str, Any] = {}
        if status.description:
            st["message"] = status.description
        if status.status_code.value:
            st["code"] = status.status_code.value
        doc["status"] = st
    doc["flags"] = flags
    return doc


def _json_resource(resource) -> dict:
    return {"attributes": _json_attributes(resource.attributes)} if resource.attributes else {}


def _json_scope(scope) -> dict:
    if scope is None:
        return {}
    doc: dict[str, Any] = {}
    if scope.name:
        doc["name"] = scope.name
    if scope.version:
        doc["version"] = scope.version
    if scope.attributes:
        doc["attributes"] = _json_attributes(scope.attributes)
    return doc


# ---------------------------------------------------------------------------------------------
# OTLP/JSON as text: the document of the request, equal to the protobuf route's, written as one string with the
# repeating parts (attribute pairs, Resources, scopes) rendered once and cached. About 3x faster
# than json.dumps of the document: the file exporter of the embedded default writes this.
# ---------------------------------------------------------------------------------------------

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_json_text_attr_cache: dict[tuple[str, type, Any], str] = {}
_json_text_recent_pairs: dict[tuple[str, type, int | float], str] = {}
_json_text_resource_cache: dict[int, tuple[object, str]] = {}
_json_text_scope_cache: dict[int, tuple[object, str]] = {}


def _json_pair_text(key: str, value: Any) -> str:
    return _dumps(_json_pair(key, value))


def _json_attributes_text(attributes) -> str:
    return "[" + ",".join(_cached_pairs(attributes, _json_text_attr_cache, _json_text_recent_pairs,
                                        _json_pair_text)) + "]"


def _json_span_text(span: ReadableSpan) -> str:
    ctx, parent, name, kind, start, end, attributes, dropped, events, links, status = _fields(span)
    if events or links or dropped:  # rare: the document route
        return _dumps(_json_span(span))
    out = ['{"traceId":"%032x","spanId":"%016x"' % (ctx.trace_id, ctx.span_id)]
    ts = _trace_state(ctx.trace_state)
    if ts:
        out.append(',"traceState":' + _dumps(ts.decode()))
    flags = _FLAGS_HAS_IS_REMOTE
    if parent is not None:
        out.append(',"parentSpanId":"%016x"' % parent.span_id)
        if parent.is_remote:
            flags |= _FLAGS_IS_REMOTE
    out.append(',"name":' + _dumps(name))
    out.append(',"kind":%d,"startTimeUnixNano":"%d","endTimeUnixNano":"%d"'
               % (kind.value + 1, start or 0, end or 0))
    if attributes:
        out.append(',"attributes":' + _json_attributes_text(attributes))
    if status is not None:
        if status.description:
            out.append(',"status":{"message":%s,"code":%d}' % (_dumps(status.description), status.status_code.value)
                       if status.status_code.value else ',"status":{"message":%s}' % _dumps(status.description))
        elif status.status_code.value:
            out.append(',"status":{"code":%d}' % status.status_code.value)
        else:
            out.append(',"status":{}')
    out.append(',"flags":%d}' % flags)
    return "".join(out)


def trace_request_json_text(spans: Sequence[ReadableSpan]) -> str:
    """The OTLP/JSON document of the ExportTraceServiceRequest holding ``spans``, as compact text
    (no newline)."""
    out = []
    for resource, scopes in _group(spans):
        rs = '{"resource":' + _cached(_json_text_resource_cache, resource, lambda r: _dumps(_json_resource(r)))
        scope_spans = []
        for scope, members in scopes:
            text = ('{"scope":' + _cached(_json_text_scope_cache, scope, lambda s: _dumps(_json_scope(s)))
                    + ',"spans":[' + ",".join([_json_span_text(span) for span in members]) + "]")
            schema = getattr(scope, "schema_url", None)
            if schema:
                text += ',"schemaUrl":' + _dumps(schema)
            scope_spans.append(text + "}")
        rs += ',"scopeSpans":[' + ",".join(scope_spans) + "]"
        if resource.schema_url:
            rs += ',"schemaUrl":' + _dumps(resource.schema_url)
        out.append(rs + "}")
    return '{"resourceSpans":[' + ",".join(out) + "]}"
