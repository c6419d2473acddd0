"""Agent path: build SDK ``ReadableSpan`` objects from exchanges, one Resource per watched process.

Usage::

    from otel_ebpf.processinfo import ProcessInfoCache
    from otel_ebpf.telemetry.spans import SpanBuilder

    builder = SpanBuilder(host_name=socket.gethostname(), process_info=ProcessInfoCache(),
                          resource_attributes={"deployment.environment.name": "prod"})
    span = builder.build(exchange)          # a finished ReadableSpan, ready for any SpanExporter
    exporter.export([span])

No Tracer is involved: one TracerProvider per watched process would be needed to give each its
own Resource, so spans are constructed directly (ids from ``id_generator``, kind, status,
attributes and name from :mod:`otel_ebpf.telemetry.semantics`, start/end from the exchange,
scope ``otel_ebpf``). A valid W3C ``traceparent`` makes the span a child of that remote parent
in the same trace, with the parent's ``tracestate`` and sampled flag; otherwise it is a sampled
root. Spans whose parent says "not sampled" are still built (metrics need them); the pipeline
does not export them, as a ParentBased sampler would not.

**Resources.** With ``per_process_resource=True`` (the agent) each pid gets a Resource, built
from, lowest precedence first:

1. ``resource_attributes`` (the agent's own ``OTEL_RESOURCE_ATTRIBUTES``), without the keys that
   describe the agent itself (``service.name``, ``service.version``, ``service.instance.id``);
2. ``host.name``, ``telemetry.distro.name`` = ``otel-ebpf`` and ``telemetry.distro.version``
   (``telemetry.sdk.*`` is left out: the watched process ran no SDK);
3. the process's own ``OTEL_RESOURCE_ATTRIBUTES``;
4. ``process.pid``, ``process.executable.name``, ``process.executable.path`` (when readable),
   ``process.command_line`` (redacted) and ``service.name`` (see :mod:`otel_ebpf.processinfo`).

Resources are cached per pid (LRU of ``max_resources``, evictions counted) and rebuilt when
the :class:`ProcessInfoCache` returns a new info for the pid. They hash once (the OTLP encoder
groups spans by hashing their Resource; the SDK's Resource re-serialises itself to JSON on
every hash), and spans with different resources encode as separate ``ResourceSpans``.

With ``per_process_resource=False`` every span gets one Resource (``agent_resource``:
``resource_attributes`` + ``host.name``, ``service.name`` defaulting to ``otel-ebpf``) and the
process identity goes on span attributes instead: ``process.pid``, ``process.executable.name``
and ``otel_ebpf.service.name`` (``service.name`` is a Resource attribute; semconv has no span
attribute meaning "the service this span ran in", hence the project prefix).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.semconv._incubating.attributes.host_attributes import HOST_NAME
from opentelemetry.semconv._incubating.attributes.process_attributes import (
    PROCESS_COMMAND_LINE,
    PROCESS_EXECUTABLE_NAME,
    PROCESS_EXECUTABLE_PATH,
    PROCESS_PID,
)
from opentelemetry.semconv.attributes.service_attributes import (
    SERVICE_INSTANCE_ID,
    SERVICE_NAME,
    SERVICE_VERSION,
)
from opentelemetry.semconv.attributes.telemetry_attributes import (
    TELEMETRY_DISTRO_NAME,
    TELEMETRY_DISTRO_VERSION,
)
from opentelemetry.trace import Link, SpanContext, TraceFlags

from otel_ebpf.processinfo import ProcessInfo, ProcessInfoCache
from otel_ebpf.records import Exchange, TraceIdentity
from otel_ebpf.telemetry.semantics import (
    SCHEMA_URL,
    SCOPE_NAME,
    SCOPE_VERSION,
    HttpSemantics,
    describe,
    process_attributes,
)

PARENT_SOURCE = "otel_ebpf.parent.source"  # how the parent was chosen (records.ParentSource)
LINK_REASON = "otel_ebpf.link.reason"  # why a span link was added (e.g. envoy-egress)

__all__ = ["AGENT_SERVICE_NAME", "DISTRO_NAME", "SpanBuilder", "agent_resource"]

AGENT_SERVICE_NAME = "otel-ebpf"
DISTRO_NAME = "otel-ebpf"
_AGENT_ONLY_KEYS = frozenset((SERVICE_NAME, SERVICE_VERSION, SERVICE_INSTANCE_ID))
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)


class _HashedResource(Resource):
    """A Resource that computes its (JSON-based) hash once: attributes are immutable."""

    def __init__(self, attributes: Mapping[str, Any], schema_url: str | None = None) -> None:
        super().__init__(dict(attributes), schema_url)
        self._hash = Resource.__hash__(self)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return Resource.__eq__(self, other)


def agent_resource(
    *, host_name: str, resource_attributes: Mapping[str, Any] | None = None, service_name: str = AGENT_SERVICE_NAME
) -> Resource:
    """The agent's own Resource: ``resource_attributes`` + ``host.name`` + ``service.name`` (kept
    from ``resource_attributes`` when set there) + ``telemetry.distro.*``."""
    attrs: dict[str, Any] = {
        SERVICE_NAME: service_name,
        HOST_NAME: host_name,
        TELEMETRY_DISTRO_NAME: DISTRO_NAME,
        TELEMETRY_DISTRO_VERSION: SCOPE_VERSION,
    }
    attrs.update(resource_attributes or {})
    return _HashedResource(attrs, SCHEMA_URL)


def span_link(trace_id: int, span_id: int, reason: str, *, sampled: bool = True) -> Link:
    """A link to another span (of another process, or one this agent made), with ``otel_ebpf.link.reason``."""
    return Link(SpanContext(trace_id, span_id, True, _SAMPLED if sampled else _NOT_SAMPLED), {LINK_REASON: reason})


class SpanBuilder:
    """Exchange → ReadableSpan (see the module docstring). Thread-safe."""

    def __init__(
        self,
        *,
        host_name: str,
        process_info: ProcessInfoCache,
        id_generator: IdGenerator | None = None,
        resource_attributes: Mapping[str, Any] | None = None,
        per_process_resource: bool = True,
        max_resources: int = 4096,
    ) -> None:
        if max_resources < 1:
            raise ValueError("max_resources must be positive")
        self._host_name = host_name
        self._process_info = process_info
        self._ids = id_generator or RandomIdGenerator()
        self._per_process = per_process_resource
        self._max_resources = max_resources
        self._base = {k: v for k, v in (resource_attributes or {}).items() if k not in _AGENT_ONLY_KEYS}
        self._agent_resource = agent_resource(host_name=host_name, resource_attributes=resource_attributes)
        self._scope = InstrumentationScope(SCOPE_NAME, SCOPE_VERSION, SCHEMA_URL)
        self._resources: OrderedDict[int, tuple[ProcessInfo, Resource, int]] = OrderedDict()
        # pid -> extra Resource attributes (Kubernetes metadata), or None; see kube.KubeMetadata
        self.resource_enricher = None
        self._enrich_generation = 0
        self._lock = threading.Lock()
        self.resource_evictions = 0

    def invalidate_resources(self) -> None:
        """Rebuild every Resource on its next use (the enricher learned something new)."""
        self._enrich_generation += 1

    @property
    def agent_resource(self) -> Resource:
        """The agent's own Resource (self-metrics; every span when ``per_process_resource`` is off)."""
        return self._agent_resource

    @property
    def instrumentation_scope(self) -> InstrumentationScope:
        return self._scope

    def counters(self) -> dict[str, int]:
        """Cumulative counters for :meth:`SelfMetrics.register`."""
        stats = self._process_info.stats()
        return {
            "otel_ebpf.spans.resource_evictions": self.resource_evictions,
            "otel_ebpf.processinfo.evictions": stats["evictions"],
            "otel_ebpf.processinfo.reads": stats["reads"],
        }

    def resource_for(self, pid: int) -> Resource:
        """The Resource spans of ``pid`` get (the agent's when per-process resources are off)."""
        if not self._per_process:
            return self._agent_resource
        return self._resource_for_info(self._process_info.get(pid))

    def _resource_for_info(self, info: ProcessInfo) -> Resource:
        pid = info.pid
        cached = self._resources.get(pid)
        if cached is not None and cached[0] is info and cached[2] == self._enrich_generation:
            return cached[1]
        resource = self._make_resource(info)
        with self._lock:
            self._resources[pid] = (info, resource, self._enrich_generation)
            self._resources.move_to_end(pid)
            while len(self._resources) > self._max_resources:
                self._resources.popitem(last=False)
                self.resource_evictions += 1
        return resource

    def _make_resource(self, info: ProcessInfo) -> Resource:
        attrs: dict[str, Any] = dict(self._base)
        attrs[HOST_NAME] = self._host_name
        attrs[TELEMETRY_DISTRO_NAME] = DISTRO_NAME
        attrs[TELEMETRY_DISTRO_VERSION] = SCOPE_VERSION
        attrs.update(info.otel_resource_attributes)
        attrs[PROCESS_PID] = info.pid
        attrs[PROCESS_EXECUTABLE_NAME] = info.executable_name
        if info.executable_path:
            attrs[PROCESS_EXECUTABLE_PATH] = info.executable_path
        if info.command_line:
            attrs[PROCESS_COMMAND_LINE] = info.command_line
        attrs[SERVICE_NAME] = info.service_name
        if self.resource_enricher is not None:
            extra = self.resource_enricher(info.pid)
            if extra:
                for key, value in extra.items():
                    if key in attrs and (key != SERVICE_NAME or info.service_name_set):
                        continue  # what the process says of itself wins (its OTEL_* variables)
                    attrs[key] = value
        return _HashedResource(attrs, SCHEMA_URL)

    def build(self, exchange: Exchange, *, semantics: HttpSemantics | None = None) -> ReadableSpan:
        """A finished span for ``exchange``; pass ``semantics`` if :func:`describe` already ran."""
        sem = semantics if semantics is not None else describe(exchange)
        return self.build_other(sem, pid=exchange.connection.pid, start_ns=exchange.start_ns,
                                end_ns=exchange.end_ns, trace=exchange.trace)

    def build_other(self, sem: HttpSemantics, *, pid: int, start_ns: int, end_ns: int,
                    trace: TraceIdentity | None = None) -> ReadableSpan:
        """A finished span from ``sem`` for process ``pid`` (an exchange, a DNS lookup): placed by
        ``trace`` (the stitching processor's choice), else by the parent ``sem`` read from the
        headers, else a new root."""
        info = self._process_info.get(pid)
        attributes = sem.attributes
        if self._per_process:
            resource = self._resource_for_info(info)
        else:
            resource = self._agent_resource
            attributes = {**attributes, **process_attributes(info)}
        links: tuple[Link, ...] = ()
        ident = trace
        if ident is not None:  # placed by the stitching processor
            flags = _SAMPLED if ident.sampled else _NOT_SAMPLED
            trace_state = sem.parent.trace_state if sem.parent is not None and ident.remote_parent else None
            parent_ctx = None if ident.parent_span_id is None else SpanContext(
                ident.trace_id, ident.parent_span_id, ident.remote_parent, flags, trace_state)
            context = SpanContext(ident.trace_id, ident.span_id, False, flags, trace_state)
            attributes = {**attributes, PARENT_SOURCE: ident.parent_source.value}
            if ident.links:
                links = tuple(span_link(lk.trace_id, lk.span_id, lk.reason) for lk in ident.links)
        else:
            parent = sem.parent
            if parent is not None:
                trace_id = parent.trace_id
                flags = _SAMPLED if parent.sampled else _NOT_SAMPLED
                trace_state = parent.trace_state
                parent_ctx = SpanContext(trace_id, parent.span_id, True, flags, trace_state)
            else:
                trace_id = self._ids.generate_trace_id()
                flags = _SAMPLED
                trace_state = None
                parent_ctx = None
            context = SpanContext(trace_id, self._ids.generate_span_id(), False, flags, trace_state)
        start = start_ns
        end = end_ns if end_ns >= start else start
        return ReadableSpan(
            name=sem.name,
            context=context,
            parent=parent_ctx,
            resource=resource,
            attributes=attributes,
            kind=sem.kind,
            status=sem.status,
            start_time=start,
            end_time=end,
            instrumentation_scope=self._scope,
            links=links,
        )
