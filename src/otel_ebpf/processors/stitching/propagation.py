"""Trace context carried by captured requests: W3C, B3 (multi and single), Jaeger, grpc-trace-bin.

Usage::

    ctx = extract(request.headers)     # CarriedContext | None
    if ctx: ctx.trace_id, ctx.span_id, ctx.sampled, ctx.source, ctx.request_id

**Which header wins** (the documented rule, never a new root):

1. Formats in this order: ``traceparent`` (W3C), ``b3`` (single), ``x-b3-*`` (multi),
   ``uber-trace-id`` (Jaeger), ``grpc-trace-bin`` (OpenCensus binary). The first valid one is
   the parent; the others, when they name a different trace, are reported in ``alternates``
   (the stitcher adds them as span links) and counted as conflicts.
2. Several values of one header (a proxy that appended its own ``traceparent`` instead of
   replacing it): the *last* valid value wins — it was written by the nearest hop, which is
   the caller's direct parent. Earlier values naming another trace become alternates.
3. Invalid values are ignored (all-zero ids, version ``ff``, wrong lengths, bad hex).

A 64-bit B3 or Jaeger trace id is kept as the integer it is: exported as 32 hex digits it is
left-padded with zeros, which is how Zipkin and OpenTelemetry agree on 64-bit ids.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from urllib.parse import unquote

from ...records import Headers, ParentSource, fast_init

__all__ = ["CarriedContext", "extract", "headers_of"]

_HEX = re.compile(r"[0-9a-f]+")
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")


@fast_init
@dataclass(frozen=True, slots=True)
class CarriedContext:
    trace_id: int
    span_id: int
    sampled: bool
    source: ParentSource
    trace_state: str = ""
    request_id: str | None = None
    alternates: tuple[tuple[int, int, ParentSource], ...] = field(default=())


def headers_of(headers: Headers, name: str) -> list[str]:
    return [v for k, v in headers if k == name]


def _hex_id(text: str, max_len: int) -> int | None:
    text = text.strip().lower()
    if not text or len(text) > max_len or not _HEX.fullmatch(text):
        return None
    value = int(text, 16)
    return value or None


def _traceparent(value: str) -> tuple[int, int, bool] | None:
    m = _TRACEPARENT.fullmatch(value.strip())  # W3C: lower-case hex only
    if not m:
        return None
    version, trace_hex, span_hex, flags_hex, rest = m.groups()
    if version == "ff" or (version == "00" and rest):
        return None
    trace_id, span_id = int(trace_hex, 16), int(span_hex, 16)
    if not trace_id or not span_id:
        return None
    return trace_id, span_id, bool(int(flags_hex, 16) & 1)


def _b3_single(value: str) -> tuple[int, int, bool] | None:
    parts = value.strip().split("-")
    if len(parts) < 2:
        return None  # "0", "1", "d": a sampling decision only, no parent
    trace_id = _hex_id(parts[0], 32) if len(parts[0]) in (16, 32) else None
    span_id = _hex_id(parts[1], 16) if len(parts[1]) == 16 else None
    if trace_id is None or span_id is None:
        return None
    sampled = parts[2].strip().lower() in ("1", "d") if len(parts) > 2 else True
    return trace_id, span_id, sampled


def _b3_multi(headers: Headers) -> tuple[int, int, bool] | None:
    tids, sids = headers_of(headers, "x-b3-traceid"), headers_of(headers, "x-b3-spanid")
    if not tids or not sids:
        return None
    t, s = tids[-1].strip(), sids[-1].strip()
    trace_id = _hex_id(t, 32) if len(t) in (16, 32) else None
    span_id = _hex_id(s, 16) if len(s) == 16 else None
    if trace_id is None or span_id is None:
        return None
    sampled_values = headers_of(headers, "x-b3-sampled")
    flags = headers_of(headers, "x-b3-flags")
    if flags and flags[-1].strip() == "1":
        sampled = True
    elif sampled_values:
        sampled = sampled_values[-1].strip().lower() in ("1", "true", "d")
    else:
        sampled = True  # deferred: follow the parent's usual choice of recording
    return trace_id, span_id, sampled


def _jaeger(value: str) -> tuple[int, int, bool] | None:
    parts = unquote(value).strip().split(":")
    if len(parts) != 4:
        return None
    trace_id = _hex_id(parts[0], 32)
    span_id = _hex_id(parts[1], 16)
    if trace_id is None or span_id is None:
        return None
    try:
        flags = int(parts[3], 16)
    except ValueError:
        return None
    return trace_id, span_id, bool(flags & 1)


def _grpc_trace_bin(value: str) -> tuple[int, int, bool] | None:
    """OpenCensus binary format: version 0, then (field id, value) pairs: 0 trace id (16 bytes),
    1 span id (8 bytes), 2 trace options (1 byte, bit 0 sampled)."""
    try:
        raw = base64.b64decode(value.strip() + "=" * (-len(value.strip()) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(raw) < 1 or raw[0] != 0:
        return None
    pos, trace_id, span_id, sampled = 1, None, None, False
    while pos < len(raw):
        fid = raw[pos]
        if fid == 0 and pos + 17 <= len(raw):
            trace_id = int.from_bytes(raw[pos + 1 : pos + 17], "big")
            pos += 17
        elif fid == 1 and pos + 9 <= len(raw):
            span_id = int.from_bytes(raw[pos + 1 : pos + 9], "big")
            pos += 9
        elif fid == 2 and pos + 2 <= len(raw):
            sampled = bool(raw[pos + 1] & 1)
            pos += 2
        else:
            break
    if not trace_id or not span_id:
        return None
    return trace_id, span_id, sampled


_CONTEXT_HEADERS = frozenset(("traceparent", "b3", "x-b3-traceid", "uber-trace-id", "grpc-trace-bin"))


def extract(headers: Headers) -> CarriedContext | None:
    """The context a request carries, by the rule in the module docstring; None when it carries none."""
    for name, _ in headers:  # the common case first: no context header at all
        if name in _CONTEXT_HEADERS:
            break
    else:
        return None
    found: list[tuple[int, int, bool, ParentSource]] = []
    earlier: list[tuple[int, int, ParentSource]] = []
    request_id = None
    tp_values, b3_values, jaeger_values, bin_values = [], [], [], []
    has_b3_multi = False
    for name, value in headers:
        if name == "traceparent":
            tp_values.append(value)
        elif name == "b3":
            b3_values.append(value)
        elif name == "x-b3-traceid":
            has_b3_multi = True
        elif name == "uber-trace-id":
            jaeger_values.append(value)
        elif name == "grpc-trace-bin":
            bin_values.append(value)
        elif name == "x-request-id" and request_id is None:
            request_id = value.strip() or None
    for values, parse, source in ((tp_values, _traceparent, ParentSource.TRACEPARENT),
                                  (b3_values, _b3_single, ParentSource.B3),
                                  (jaeger_values, _jaeger, ParentSource.JAEGER),
                                  (bin_values, _grpc_trace_bin, ParentSource.GRPC_TRACE_BIN)):
        if source == ParentSource.JAEGER and has_b3_multi:
            parsed = _b3_multi(headers)
            if parsed:
                found.append((*parsed, ParentSource.B3_MULTI))
        valid = [p for p in (parse(v) for v in values) if p]
        if valid:
            found.append((*valid[-1], source))
            earlier.extend((t, s, source) for t, s, _ in valid[:-1])
    if not found:
        return None
    trace_id, span_id, sampled, source = found[0]
    alternates = tuple((t, s, src) for t, s, _, src in found[1:] if t != trace_id)
    alternates += tuple(e for e in earlier if e[0] != trace_id)
    trace_state = ",".join(v.strip() for v in headers_of(headers, "tracestate")) \
        if source == ParentSource.TRACEPARENT else ""
    return CarriedContext(trace_id, span_id, sampled, source, trace_state, request_id, alternates)
