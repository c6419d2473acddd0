"""A fake Kubernetes API server over real HTTP, for driving the official ``kubernetes`` client in tests.

Usage::

    from kubernetes import client, config, watch
    from otel_ebpf.testing.fake_kube import FakeKubeApiServer, make_node, make_pod

    with FakeKubeApiServer() as kube:
        kube.add(make_node("node-a", internal_ip="192.168.0.10"))
        kube.add(make_pod("web-0", "shop", ip="10.1.0.5", node="node-a", labels={"app": "web"}))
        config.load_kube_config(config_file=str(kube.kubeconfig(tmp_path / "kubeconfig")))
        core = client.CoreV1Api()
        pods = core.list_pod_for_all_namespaces(field_selector="spec.nodeName=node-a")
        for event in watch.Watch().stream(core.list_pod_for_all_namespaces,
                                          resource_version=pods.metadata.resource_version,
                                          timeout_seconds=5):
            ...

What it serves, read-only (GET), as JSON, the way a real API server does:

* Discovery: ``/version``, ``/api``, ``/api/v1``, ``/apis``, ``/apis/<group>`` and ``/apis/<group>/<version>``.
  ``networking.istio.io`` exists only with ``istio=True``; otherwise its paths answer 404.
* For every kind in :data:`RESOURCES` (plus :data:`ISTIO_RESOURCES`): list and watch on the cluster-wide
  collection (``/api/v1/pods``) and on namespaced ones (``/api/v1/namespaces/NS/pods``), and GET of one object.
* Lists: ``{Kind}List`` whose items carry no ``kind``/``apiVersion`` (as a real server's typed lists), ordered
  by etcd key (``namespace/name``). ``labelSelector`` (``=``, ``==``, ``!=``, ``in``, ``notin``, ``key``,
  ``!key``, ``>``, ``<``), ``fieldSelector`` (``metadata.name``, ``metadata.namespace`` and the kind's own
  field labels, e.g. a pod's ``spec.nodeName`` and ``status.phase``; ``=``, ``==``, ``!=``), ``limit`` +
  ``continue`` (a consistent snapshot at the first page's resourceVersion; a token whose resourceVersion was
  compacted away gets 410 ``Expired``), ``resourceVersionMatch=Exact`` (the state at that resourceVersion,
  410 once compacted).
* Watches (``watch=true``/``1``): a chunked response, one JSON event per line. From ``resourceVersion=X``
  every retained event after X is replayed, then live events follow; without a resourceVersion or with
  ``"0"`` the watch opens with a synthetic ``ADDED`` per current object. X older than the last
  :meth:`FakeKubeApiServer.compact` gets an ``ERROR`` event holding a 410 ``Expired`` Status, then the stream
  ends, as a real server does. Selectors apply: an object that starts matching arrives as ``ADDED``, one that
  stops matching as ``DELETED``. ``allowWatchBookmarks=true`` brings a ``BOOKMARK`` every
  ``bookmark_interval`` seconds (and on :meth:`~FakeKubeApiServer.send_bookmarks`); ``timeoutSeconds`` ends
  the stream cleanly; ``sendInitialEvents=true`` ends the initial events with a bookmark annotated
  ``k8s.io/initial-events-end``.
* Errors are ``Status`` objects. With a ``token`` (the default), a request without ``Authorization: Bearer
  <token>`` gets 401.

resourceVersions are one global, increasing integer (the first object gets 101), rendered as strings.
Objects are changed only by the test, through :meth:`~FakeKubeApiServer.add`,
:meth:`~FakeKubeApiServer.modify`, :meth:`~FakeKubeApiServer.apply` and
:meth:`~FakeKubeApiServer.delete`; the ``make_*`` builders return plain dicts in the real API's shape, with
uids derived from kind, namespace and name (:func:`object_uid`) so that owner references line up without
bookkeeping. Test controls: :meth:`~FakeKubeApiServer.drop_watches`, :meth:`~FakeKubeApiServer.fail_next`,
:attr:`~FakeKubeApiServer.request_log`, :meth:`~FakeKubeApiServer.active_watches`.

What the official client makes of it (checked with ``kubernetes`` 34 and 37):

* ``watch.Watch().stream(fn, resource_version=X)`` turns the 410 ERROR event into
  ``ApiException(status=410, reason="Expired: too old resource version: ...")``; without ``timeout_seconds``
  it first re-watches once from the same X, silently. It also re-watches by itself, from the last
  resourceVersion it saw (events and bookmarks), whenever a stream ends cleanly, unless ``timeout_seconds``
  was given. A dropped connection (:meth:`~FakeKubeApiServer.drop_watches`) raises
  ``urllib3.exceptions.ProtocolError`` out of the generator.
* A BOOKMARK event's ``object`` is the raw dict (never deserialized).
* Raw reads: any generated method with ``_preload_content=False`` returns the unread
  ``urllib3.HTTPResponse`` (``.data``, or ``.stream()`` for a watch), and raises ``ApiException`` on a
  non-2xx status first. ``ApiClient.call_api`` changed shape in 37: before, ``call_api(path, "GET",
  query_params=..., auth_settings=["BearerToken"], _preload_content=False)``; from 37, ``call_api(*
  api_client.param_serialize("GET", path, query_params=..., auth_settings=["BearerToken"]))`` returns an
  unread ``RESTResponse`` whose ``.response`` is the urllib3 one.

``start()`` returns once the server listens; ``stop()`` is safe twice and before ``start()`` and ends every
watch. All methods are thread-safe.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Self
from urllib.parse import parse_qs, unquote, urlsplit

from otel_ebpf.testing._http import BadRequest as _BadRequest
from otel_ebpf.testing._http import ReceiverHandler, serve, shut_down

if TYPE_CHECKING:
    from kubernetes.client import ApiClient, Configuration

__all__ = [
    "DEFAULT_TOKEN",
    "FIRST_RESOURCE_VERSION",
    "ISTIO_RESOURCES",
    "RESOURCES",
    "FakeKubeApiServer",
    "KubeRequest",
    "Owner",
    "ResourceType",
    "SelectorError",
    "container_id",
    "make_cronjob",
    "make_daemonset",
    "make_deployment",
    "make_destination_rule",
    "make_endpoints",
    "make_endpointslice",
    "make_job",
    "make_namespace",
    "make_node",
    "make_object",
    "make_pod",
    "make_replicaset",
    "make_service",
    "make_statefulset",
    "make_virtual_service",
    "object_uid",
    "owner_reference",
    "parse_field_selector",
    "parse_label_selector",
]

FIRST_RESOURCE_VERSION = 100
"""The resourceVersion of the empty store; the first change gets 101. Not 0, which means "any" to a server."""

DEFAULT_TOKEN = "fake-token"

KUBERNETES_VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.0-fake",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2025-01-01T00:00:00Z",
    "goVersion": "go1.23.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}

_BUILDER_TIME = "2025-01-01T00:00:00Z"
"""startTime and startedAt in built objects; creationTimestamp is stamped by ``add`` instead."""

_UID_NAMESPACE = uuid.UUID("0d5c4a8e-6f55-4e43-9a39-5b8e1f2f7a10")

_WAIT_FOR_WATCHES_TO_END = 5.0
"""How long ``drop_watches`` and ``stop`` wait for watch handlers to notice and unregister."""


# -- resource types ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResourceType:
    """One served kind: where it lives in the API and how it is listed."""

    kind: str
    group: str  # "" for the core group
    version: str
    plural: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    field_labels: tuple[str, ...] = ()  # fieldSelector fields beyond metadata.name and metadata.namespace

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_version_path(self) -> str:
        return f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"

    @property
    def qualified_plural(self) -> str:
        """``pods``, ``deployments.apps``: how a real server names the resource in error messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def collection_path(self, namespace: str | None = None) -> str:
        """``/api/v1/pods`` or, with ``namespace``, ``/api/v1/namespaces/NS/pods``."""
        if namespace is None or not self.namespaced:
            return f"{self.group_version_path}/{self.plural}"
        return f"{self.group_version_path}/namespaces/{namespace}/{self.plural}"


_POD_FIELDS = ("spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
               "spec.hostNetwork", "status.phase", "status.podIP", "status.nominatedNodeName")

RESOURCES: tuple[ResourceType, ...] = (
    ResourceType("Pod", "", "v1", "pods", True, ("po",), _POD_FIELDS),
    ResourceType("Service", "", "v1", "services", True, ("svc",)),
    ResourceType("Endpoints", "", "v1", "endpoints", True, ("ep",)),
    ResourceType("Node", "", "v1", "nodes", False, ("no",), ("spec.unschedulable",)),
    ResourceType("Namespace", "", "v1", "namespaces", False, ("ns",), ("status.phase",)),
    ResourceType("EndpointSlice", "discovery.k8s.io", "v1", "endpointslices", True),
    ResourceType("ReplicaSet", "apps", "v1", "replicasets", True, ("rs",), ("status.replicas",)),
    ResourceType("Deployment", "apps", "v1", "deployments", True, ("deploy",)),
    ResourceType("StatefulSet", "apps", "v1", "statefulsets", True, ("sts",)),
    ResourceType("DaemonSet", "apps", "v1", "daemonsets", True, ("ds",)),
    ResourceType("Job", "batch", "v1", "jobs", True, (), ("status.successful",)),
    ResourceType("CronJob", "batch", "v1", "cronjobs", True, ("cj",)),
)
"""The kinds every FakeKubeApiServer serves."""

ISTIO_RESOURCES: tuple[ResourceType, ...] = (
    ResourceType("VirtualService", "networking.istio.io", "v1", "virtualservices", True, ("vs",)),
    ResourceType("DestinationRule", "networking.istio.io", "v1", "destinationrules", True, ("dr",)),
)
"""The kinds served with ``istio=True``."""

_ALL_TYPES = {t.kind: t for t in RESOURCES + ISTIO_RESOURCES}

_BOOLEAN_FIELDS = frozenset({"spec.hostNetwork", "spec.unschedulable"})
"""Fields a real server renders "false" when unset, rather than ""."""


# -- selectors ---------------------------------------------------------------------------------------------


class SelectorError(ValueError):
    """A label or field selector the server refuses (400 BadRequest)."""


_KEY = r"[A-Za-z0-9](?:[-A-Za-z0-9_./]*[A-Za-z0-9])?"
_VALUE = r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_SET_TERM = re.compile(rf"({_KEY})\s+(in|notin)\s*\((.*)\)")
_OP_TERM = re.compile(rf"({_KEY})\s*(==|!=|=|>|<)\s*(.*)")
_EXISTS_TERM = re.compile(rf"(!?)\s*({_KEY})")


class _Requirement(NamedTuple):
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!", ">", "<"
    values: tuple[str, ...]

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        if self.op in ("=", "in"):
            return present and value in self.values
        if self.op in ("!=", "notin"):
            return not present or value not in self.values
        try:  # > and <: integer comparison, as labels.Parse does
            number = int(value or "")
        except ValueError:
            return False
        return number > int(self.values[0]) if self.op == ">" else number < int(self.values[0])


def _split_top_level(text: str) -> list[str]:
    """``text`` split on the commas outside parentheses."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def parse_label_selector(text: str) -> tuple[_Requirement, ...]:
    """The requirements of a ``labelSelector``, all of which must hold (comma is AND); ``""`` matches all."""
    if not text.strip():
        return ()
    requirements = []
    for raw in _split_top_level(text):
        term = raw.strip()
        if match := _SET_TERM.fullmatch(term):
            values = tuple(v.strip() for v in match.group(3).split(","))
            if not all(re.fullmatch(_VALUE, v) for v in values):
                raise SelectorError(f"unable to parse requirement: invalid label value in {term!r}")
            requirements.append(_Requirement(match.group(1), match.group(2), values))
        elif match := _OP_TERM.fullmatch(term):
            key, op, value = match.group(1), match.group(2), match.group(3).strip()
            if op in (">", "<"):
                if not re.fullmatch(r"-?[0-9]+", value):
                    raise SelectorError(f"unable to parse requirement: {op} needs an integer, got {value!r}")
            elif not re.fullmatch(_VALUE, value):
                raise SelectorError(f"unable to parse requirement: invalid label value {value!r}")
            requirements.append(_Requirement(key, "=" if op == "==" else op, (value,)))
        elif match := _EXISTS_TERM.fullmatch(term):
            requirements.append(_Requirement(match.group(2), "!" if match.group(1) else "exists", ()))
        else:
            raise SelectorError(f"unable to parse requirement: {term!r}")
    return tuple(requirements)


def parse_field_selector(text: str, rtype: ResourceType) -> tuple[tuple[str, str, str], ...]:
    """``(field, op, value)`` terms of a ``fieldSelector`` (op ``=`` or ``!=``), checked against ``rtype``."""
    if not text.strip():
        return ()
    supported = ("metadata.name", "metadata.namespace") + rtype.field_labels
    terms = []
    for raw in text.split(","):
        match = re.fullmatch(r"\s*([A-Za-z0-9_.]+)\s*(==|!=|=)\s*(.*?)\s*", raw)
        if match is None:
            raise SelectorError(f"invalid selector: {raw.strip()!r}; can't understand it")
        name, op, value = match.groups()
        if name not in supported:
            raise SelectorError(f'field label not supported: {name}')
        terms.append((name, "=" if op == "==" else op, value))
    return tuple(terms)


def _field_value(obj: Mapping[str, Any], path: str) -> str:
    node: Any = obj
    for part in path.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    if isinstance(node, bool):
        return "true" if node else "false"
    if node is None:
        return "false" if path in _BOOLEAN_FIELDS else ""
    return str(node)


@dataclass(frozen=True)
class _Filter:
    """What one list or watch asks for: a namespace (None: all) and its selectors."""

    namespace: str | None = None
    labels: tuple[_Requirement, ...] = ()
    fields: tuple[tuple[str, str, str], ...] = ()

    def matches(self, obj: Mapping[str, Any]) -> bool:
        meta = obj.get("metadata") or {}
        if self.namespace is not None and meta.get("namespace") != self.namespace:
            return False
        labels = meta.get("labels") or {}
        if not all(r.matches(labels) for r in self.labels):
            return False
        return all((_field_value(obj, name) == value) == (op == "=") for name, op, value in self.fields)


# -- errors ------------------------------------------------------------------------------------------------


_REASONS = {
    400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 405: "MethodNotAllowed",
    409: "Conflict", 410: "Expired", 422: "Invalid", 429: "TooManyRequests", 500: "InternalError",
    503: "ServiceUnavailable", 504: "Timeout",
}


def _status(code: int, message: str, *, reason: str | None = None, details: dict[str, Any] | None = None,
            metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """A ``Status`` object, as a real server sends for every failure."""
    status: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": metadata or {},
        "status": "Failure",
        "message": message,
        "reason": reason or _REASONS.get(code, "Unknown"),
        "code": code,
    }
    if details is not None:
        status["details"] = details
    return status


class _Refused(Exception):
    """A request answered with the Status ``status``."""

    def __init__(self, status: dict[str, Any]) -> None:
        super().__init__(status["message"])
        self.status = status


def _refuse(code: int, message: str, **kwargs: Any) -> _Refused:
    return _Refused(_status(code, message, **kwargs))


# -- the store's records -----------------------------------------------------------------------------------


class KubeRequest(NamedTuple):
    """One request the server received: ``method``, decoded ``path`` (no query) and ``query`` (last value
    of each parameter)."""

    method: str
    path: str
    query: dict[str, str]

    @property
    def watch(self) -> bool:
        return _parse_bool(self.query.get("watch", ""))


@dataclass(frozen=True)
class _Event:
    """One change in the history. ``obj`` is the object after it (for DELETED: its last state stamped with
    the deletion's resourceVersion); ``prev`` the object before it (None for ADDED)."""

    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    kind: str
    key: str
    obj: dict[str, Any]
    prev: dict[str, Any] | None


@dataclass(eq=False)
class _Watch:
    """One open watch; its handler thread sends what ``pending`` holds."""

    rtype: ResourceType
    filter: _Filter
    bookmarks: bool
    connection: socket.socket
    pending: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    bookmark_requested: bool = False
    ending: str | None = None  # "dropped", "ended", "stopped" or "client-gone"


_Key = tuple[str, str]  # (kind, etcd-style key "namespace/name" or "name")


class _FailureRule(NamedTuple):
    remaining: int
    status: int
    path: str | None


# -- the server --------------------------------------------------------------------------------------------


class FakeKubeApiServer:
    """A read-only Kubernetes API server on loopback, backed by an in-memory store. A context manager.

    ``token``: the bearer token requests must carry (``None``: no authentication).
    ``bookmark_interval``: seconds between BOOKMARK events on watches that allow them.
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, istio: bool = False,
                 token: str | None = DEFAULT_TOKEN, bookmark_interval: float = 1.0) -> None:
        self._host = host
        self._port = port
        self._token = token
        self._bookmark_interval = bookmark_interval
        self._types = {t.kind: t for t in RESOURCES + (ISTIO_RESOURCES if istio else ())}
        self._by_plural = {(t.group, t.version, t.plural): t for t in self._types.values()}
        self._lock = threading.Condition()
        self._objects: dict[_Key, dict[str, Any]] = {}
        self._rv = FIRST_RESOURCE_VERSION
        self._compacted = FIRST_RESOURCE_VERSION
        self._history: list[_Event] = []
        self._watches: set[_Watch] = set()
        self._requests: list[KubeRequest] = []
        self._failures: list[_FailureRule] = []
        self._state = "new"  # new -> started -> stopped
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()

    # -- lifecycle ---------------------------------------------------------------------------------------

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> Self:
        """Bind and start serving; returns self. A server starts once."""
        with self._lock:
            if self._state != "new":
                raise RuntimeError(f"FakeKubeApiServer already {self._state}")
            self._state = "started"

        class Handler(_Handler):
            kube = self

        self._server, self._thread = serve(self._host, Handler, "fake-kube-api", port=self._port)
        return self

    def stop(self) -> None:
        """Stop serving: every watch ends (abruptly), open connections close. The store stays readable.
        Safe twice and before ``start``."""
        with self._lock:
            if self._state == "stopped":
                return
            started = self._state == "started"
            self._state = "stopped"
            for watch in self._watches:
                watch.ending = "stopped"
            self._lock.notify_all()
        if not started or self._server is None:
            return
        shut_down(self._server, self._thread, self._open_connections)
        with self._lock:
            self._lock.wait_for(lambda: not self._watches, timeout=_WAIT_FOR_WATCHES_TO_END)

    def _open_connections(self) -> list[socket.socket]:
        with self._lock:
            return list(self._connections)

    # -- address and client configuration ----------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://HOST:PORT``, the cluster's server address."""
        if self._server is None:
            raise RuntimeError("FakeKubeApiServer is not started")
        return f"http://{self._host}:{self._server.server_address[1]}"

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeKubeApiServer is not started")
        return self._server.server_address[1]

    @property
    def token(self) -> str | None:
        return self._token

    def kubeconfig(self, path: str | Path, *, namespace: str = "default") -> Path:
        """Write a kubeconfig for this server to ``path`` (JSON, which is YAML) and return it: one cluster
        ``fake`` at :attr:`url` (insecure-skip-tls-verify), one user with the bearer token, one context."""
        user: dict[str, Any] = {"token": self._token} if self._token else {}
        document = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url, "insecure-skip-tls-verify": True}}],
            "users": [{"name": "fake", "user": user}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": namespace}}],
            "current-context": "fake",
        }
        path = Path(path)
        path.write_text(json.dumps(document, indent=2) + "\n")
        return path

    def configuration(self) -> Configuration:
        """A ``kubernetes.client.Configuration`` for this server (imports ``kubernetes`` lazily)."""
        from kubernetes import client

        configuration = client.Configuration()
        configuration.host = self.url
        configuration.verify_ssl = False
        if self._token:
            configuration.api_key = {"authorization": self._token}
            configuration.api_key_prefix = {"authorization": "Bearer"}
        return configuration

    def api_client(self) -> ApiClient:
        """A new ``kubernetes.client.ApiClient`` on :meth:`configuration`; the caller closes it."""
        from kubernetes import client

        return client.ApiClient(self.configuration())

    # -- the store ---------------------------------------------------------------------------------------

    @property
    def resource_version(self) -> int:
        """The current global resourceVersion."""
        with self._lock:
            return self._rv

    def resource_type(self, kind: str) -> ResourceType:
        """The served type of ``kind``; ValueError for a kind this server does not serve."""
        rtype = self._types.get(kind)
        if rtype is None:
            hint = " (construct FakeKubeApiServer(istio=True))" if kind in _ALL_TYPES else ""
            raise ValueError(f"kind {kind!r} is not served{hint}")
        return rtype

    def add(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Create ``obj`` (a dict with ``kind`` and ``metadata.name``); returns the stored copy, with
        ``apiVersion``, ``metadata.resourceVersion``, ``uid`` (if missing) and ``creationTimestamp`` filled.
        ValueError if it exists."""
        rtype, stored = self._prepare(obj)
        key = self._key(rtype, stored["metadata"])
        with self._lock:
            if key in self._objects:
                raise ValueError(f"{rtype.kind} {key[1]!r} already exists")
            meta = stored["metadata"]
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", _now())
            self._commit("ADDED", rtype, key, stored, None)
        return _copy(stored)

    def modify(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Replace the stored object named by ``obj``; returns the stored copy with a new resourceVersion.
        A given resourceVersion is ignored (no conflicts); a missing uid or creationTimestamp is kept from the
        stored object. KeyError if it does not exist."""
        rtype, stored = self._prepare(obj)
        key = self._key(rtype, stored["metadata"])
        with self._lock:
            previous = self._objects.get(key)
            if previous is None:
                raise KeyError(f"{rtype.kind} {key[1]!r} not found")
            for name in ("uid", "creationTimestamp"):
                stored["metadata"].setdefault(name, previous["metadata"].get(name))
            self._commit("MODIFIED", rtype, key, stored, previous)
        return _copy(stored)

    def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """:meth:`modify` if the object exists, else :meth:`add`."""
        with self._lock:  # re-entrant: no change can slip between the check and the write
            rtype, stored = self._prepare(obj)
            if self._key(rtype, stored["metadata"]) in self._objects:
                return self.modify(obj)
            return self.add(obj)

    def delete(self, kind: str, namespace: str | None, name: str) -> dict[str, Any]:
        """Delete an object (``namespace`` is ignored for cluster-scoped kinds); returns it as the DELETED
        event carries it: its last state with the deletion's resourceVersion. KeyError if absent."""
        rtype = self.resource_type(kind)
        key = self._key(rtype, {"namespace": namespace, "name": name})
        with self._lock:
            previous = self._objects.get(key)
            if previous is None:
                raise KeyError(f"{kind} {key[1]!r} not found")
            gone = _copy(previous)
            self._commit("DELETED", rtype, key, gone, previous)
        return _copy(gone)

    def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """A copy of the stored object, or None. (A None ``namespace`` means "default" for namespaced kinds.)"""
        rtype = self.resource_type(kind)
        key = self._key(rtype, {"namespace": namespace, "name": name})
        with self._lock:
            obj = self._objects.get(key)
            return None if obj is None else _copy(obj)

    def objects(self, kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """Copies of the stored objects of ``kind`` (in ``namespace`` if given), in key order."""
        rtype = self.resource_type(kind)
        wanted = _Filter(namespace=namespace if rtype.namespaced else None)
        with self._lock:
            return [_copy(o) for k, o in sorted(self._objects.items()) if k[0] == kind and wanted.matches(o)]

    def compact(self, resource_version: int | None = None) -> int:
        """Forget the history up to ``resource_version`` (default: now), as etcd compaction does: a watch or
        a continue token from before it gets 410 Expired. Open watches are not affected. Returns the point."""
        with self._lock:
            point = self._rv if resource_version is None else min(int(resource_version), self._rv)
            self._compacted = max(self._compacted, point)
            self._history = [e for e in self._history if e.rv > self._compacted]
            return self._compacted

    def _prepare(self, obj: Mapping[str, Any]) -> tuple[ResourceType, dict[str, Any]]:
        stored = _copy(obj)
        rtype = self.resource_type(str(stored.get("kind", "")))
        stored["apiVersion"] = rtype.api_version
        meta = stored.setdefault("metadata", {})
        if not meta.get("name"):
            raise ValueError(f"{rtype.kind} without metadata.name")
        if rtype.namespaced:
            meta["namespace"] = meta.get("namespace") or "default"
        else:
            meta.pop("namespace", None)
        return rtype, stored

    @staticmethod
    def _key(rtype: ResourceType, meta: Mapping[str, Any]) -> _Key:
        if rtype.namespaced:
            return rtype.kind, f"{meta.get('namespace') or 'default'}/{meta['name']}"
        return rtype.kind, str(meta["name"])

    def _commit(self, type_: str, rtype: ResourceType, key: _Key, obj: dict[str, Any],
                prev: dict[str, Any] | None) -> None:
        """Record a change at the next resourceVersion and queue it to the matching watches. Lock held."""
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        if type_ == "DELETED":
            self._objects.pop(key, None)
        else:
            self._objects[key] = obj
        event = _Event(self._rv, type_, rtype.kind, key[1], obj, prev)
        self._history.append(event)
        for watch in self._watches:
            if watch.rtype == rtype and (view := _view(watch.filter, event)) is not None:
                watch.pending.append(view)
        self._lock.notify_all()

    def _state_at(self, kind: str, rv: int) -> dict[str, dict[str, Any]]:
        """The objects of ``kind`` by key as they were at ``rv`` (not before the compaction point). Lock held."""
        state = {k[1]: o for k, o in self._objects.items() if k[0] == kind}
        for event in reversed(self._history):
            if event.rv <= rv:
                break
            if event.kind != kind:
                continue
            if event.prev is None:
                state.pop(event.key, None)
            else:
                state[event.key] = event.prev
        return state

    # -- test controls -----------------------------------------------------------------------------------

    @property
    def request_log(self) -> list[KubeRequest]:
        """Every request received so far, in order (discovery included)."""
        with self._lock:
            return list(self._requests)

    def clear_request_log(self) -> None:
        with self._lock:
            self._requests.clear()

    def fail_next(self, n: int = 1, *, status: int = 500, path: str | None = None) -> None:
        """Answer the next ``n`` authenticated requests (those whose path starts with ``path``, if given)
        with a Status of code ``status`` instead of serving them."""
        with self._lock:
            self._failures.append(_FailureRule(n, status, path))

    def active_watches(self, kind: str | None = None) -> int:
        """Watches open now (of ``kind``, if given)."""
        with self._lock:
            return sum(1 for w in self._watches if kind is None or w.rtype.kind == kind)

    def wait_for_watches(self, n: int = 1, *, kind: str | None = None, timeout: float = 5.0) -> int:
        """Wait until at least ``n`` watches (of ``kind``) are open; returns how many. TimeoutError after
        ``timeout``."""
        def count() -> int:
            return sum(1 for w in self._watches if kind is None or w.rtype.kind == kind)

        with self._lock:
            if self._lock.wait_for(lambda: count() >= n, timeout=timeout):
                return count()
            seen = count()
        raise TimeoutError(f"FakeKubeApiServer: {n} watch(es) of {kind or 'any kind'} not open within "
                           f"{timeout}s ({seen} open)")

    def drop_watches(self, *, kind: str | None = None, graceful: bool = False) -> int:
        """End the open watches (of ``kind``): by default abruptly, the socket shut mid-stream as when a
        connection drops (the client sees a broken chunked body); with ``graceful``, cleanly (the terminating
        chunk, as a server does at a watch's timeout). Returns once their handlers are gone; returns how many
        watches it ended."""
        with self._lock:
            victims = [w for w in self._watches if kind is None or w.rtype.kind == kind]
            for watch in victims:
                watch.ending = "ended" if graceful else "dropped"
            self._lock.notify_all()
        if not graceful:
            for watch in victims:
                _shutdown_socket(watch.connection)
        with self._lock:
            self._lock.wait_for(lambda: not any(w in self._watches for w in victims),
                                timeout=_WAIT_FOR_WATCHES_TO_END)
        return len(victims)

    def send_bookmarks(self) -> None:
        """Send a BOOKMARK now on every open watch that allows bookmarks."""
        with self._lock:
            for watch in self._watches:
                watch.bookmark_requested = watch.bookmarks
            self._lock.notify_all()

    # -- serving -----------------------------------------------------------------------------------------

    def _handle(self, handler: _Handler) -> None:
        split = urlsplit(handler.path)
        path = unquote(split.path)
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        try:
            with self._lock:
                self._requests.append(KubeRequest(handler.command, path, query))
                self._check_auth(handler.headers.get("Authorization"))
                self._inject_failure(path)
            if handler.command != "GET":
                raise _refuse(405, "the server does not allow this method on the requested resource "
                                   "(FakeKubeApiServer is read-only)")
            self._route(handler, path, query)
        except _Refused as refused:
            handler.send_json(refused.status["code"], refused.status)

    def _check_auth(self, header: str | None) -> None:
        if self._token and header != f"Bearer {self._token}":
            raise _refuse(401, "Unauthorized")

    def _inject_failure(self, path: str) -> None:
        for i, rule in enumerate(self._failures):
            if rule.path is None or path.startswith(rule.path):
                if rule.remaining <= 1:
                    del self._failures[i]
                else:
                    self._failures[i] = rule._replace(remaining=rule.remaining - 1)
                raise _refuse(rule.status, f"injected failure (fail_next) for {path}")

    def _route(self, handler: _Handler, path: str, query: dict[str, str]) -> None:
        segments = [s for s in path.split("/") if s]
        if segments == ["version"]:
            return handler.send_json(200, KUBERNETES_VERSION)
        if segments == ["api"]:
            return handler.send_json(200, {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0",
                                                "serverAddress": f"{self._host}:{self.port}"}],
            })
        if segments == ["apis"]:
            return handler.send_json(200, self._group_list())
        if len(segments) >= 2 and segments[0] == "api":
            group, version, rest = "", segments[1], segments[2:]
        elif len(segments) >= 2 and segments[0] == "apis":
            group = segments[1]
            if len(segments) == 2:
                return handler.send_json(200, self._group(group))
            version, rest = segments[2], segments[3:]
        else:
            raise _not_found()
        types = [t for t in self._types.values() if (t.group, t.version) == (group, version)]
        if not types:
            raise _not_found()
        if not rest:
            return handler.send_json(200, _resource_list(group, version, types))
        if rest[0] == "namespaces" and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        else:
            namespace = None
        rtype = self._by_plural.get((group, version, rest[0]))
        if rtype is None or len(rest) > 2 or (namespace is not None and not rtype.namespaced):
            raise _not_found()
        if len(rest) == 2:
            if rtype.namespaced and namespace is None:
                raise _not_found()
            return handler.send_json(200, self._get_one(rtype, namespace, rest[1]))
        if _parse_bool(query.get("watch", "")):
            return self._serve_watch(handler, rtype, namespace, query)
        return handler.send_json(200, self._list(rtype, namespace, query))

    def _group_list(self) -> dict[str, Any]:
        groups = sorted({t.group for t in self._types.values() if t.group})
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [self._group(g) for g in groups]}

    def _group(self, group: str) -> dict[str, Any]:
        versions = sorted({t.version for t in self._types.values() if t.group == group and group})
        if not versions:
            raise _not_found()
        entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": entries,
                "preferredVersion": entries[-1]}

    def _get_one(self, rtype: ResourceType, namespace: str | None, name: str) -> dict[str, Any]:
        key = self._key(rtype, {"namespace": namespace, "name": name})
        with self._lock:
            obj = self._objects.get(key)
        if obj is None:
            details: dict[str, Any] = {"name": name, "kind": rtype.plural}
            if rtype.group:
                details["group"] = rtype.group
            raise _refuse(404, f'{rtype.qualified_plural} "{name}" not found', details=details)
        return obj

    def _filter(self, rtype: ResourceType, namespace: str | None, query: Mapping[str, str]) -> _Filter:
        try:
            return _Filter(namespace=namespace,
                           labels=parse_label_selector(query.get("labelSelector", "")),
                           fields=parse_field_selector(query.get("fieldSelector", ""), rtype))
        except SelectorError as error:
            raise _refuse(400, str(error)) from None

    def _list(self, rtype: ResourceType, namespace: str | None, query: Mapping[str, str]) -> dict[str, Any]:
        wanted = self._filter(rtype, namespace, query)
        token = query.get("continue", "")
        rv_text = query.get("resourceVersion", "")
        match = query.get("resourceVersionMatch", "")
        limit = _parse_int(query.get("limit", "") or "0", "limit")
        if match and match not in ("Exact", "NotOlderThan"):
            raise _refuse(422, f'resourceVersionMatch: Unsupported value: "{match}"')
        if match and not rv_text:
            raise _refuse(422, "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless "
                               "resourceVersion is provided")
        if token and rv_text and rv_text != "0":
            raise _refuse(400, "specifying resource version is not allowed when using continue")
        start = ""
        with self._lock:
            if token:
                at_rv, start = _decode_continue(token)
                if at_rv and at_rv < self._compacted:
                    raise _refuse(410, _CONTINUE_EXPIRED, metadata={"continue": _encode_continue(0, start)})
            elif match == "Exact":
                at_rv = _parse_int(rv_text, "resourceVersion")
                if at_rv < self._compacted:
                    raise _refuse(410, "The resourceVersion for the provided list is too old.")
                if at_rv > self._rv:
                    raise _refuse(504, f"Too large resource version: {at_rv}, current: {self._rv}",
                                  details={"causes": [{"reason": "ResourceVersionTooLarge",
                                                       "message": "Too large resource version"}],
                                           "retryAfterSeconds": 1})
            else:
                at_rv = 0
            served_rv = at_rv or self._rv
            state = self._state_at(rtype.kind, served_rv)
        keys = sorted(k for k, o in state.items() if k >= start and wanted.matches(o))
        metadata: dict[str, Any] = {"resourceVersion": str(served_rv)}
        if 0 < limit < len(keys):
            metadata["continue"] = _encode_continue(served_rv, keys[limit - 1] + "\x00")
            if not wanted.labels and not wanted.fields:
                metadata["remainingItemCount"] = len(keys) - limit
            keys = keys[:limit]
        items = [{k: v for k, v in state[key].items() if k not in ("kind", "apiVersion")} for key in keys]
        return {"kind": f"{rtype.kind}List", "apiVersion": rtype.api_version, "metadata": metadata, "items": items}

    def _serve_watch(self, handler: _Handler, rtype: ResourceType, namespace: str | None,
                     query: Mapping[str, str]) -> None:
        wanted = self._filter(rtype, namespace, query)
        rv_text = query.get("resourceVersion", "")
        bookmarks = _parse_bool(query.get("allowWatchBookmarks", ""))
        initial_flag = query.get("sendInitialEvents")
        match = query.get("resourceVersionMatch", "")
        if initial_flag is not None:
            if match != "NotOlderThan":
                raise _refuse(422, "resourceVersionMatch: Forbidden: sendInitialEvents requires setting "
                                   "resourceVersionMatch to NotOlderThan")
            if not bookmarks:
                raise _refuse(422, "allowWatchBookmarks: Forbidden: sendInitialEvents requires setting "
                                   "allowWatchBookmarks to true")
        elif match:
            raise _refuse(422, "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden for watch "
                               "unless sendInitialEvents is provided")
        send_initial = _parse_bool(initial_flag) if initial_flag is not None else rv_text in ("", "0")
        from_rv = _parse_int(rv_text, "resourceVersion") if rv_text not in ("", "0") else 0
        timeout = _parse_int(query["timeoutSeconds"], "timeoutSeconds") if query.get("timeoutSeconds") else None
        deadline = None if timeout is None else time.monotonic() + timeout

        # The headers go first, so that a watch counted by active_watches() has its response under way and
        # drop_watches() breaks a body, not a request (which urllib3 would silently retry).
        try:
            handler.start_chunked()
        except OSError:
            handler.close_connection = True
            return
        watch = _Watch(rtype, wanted, bookmarks, handler.connection)
        with self._lock:
            if self._state != "started":
                watch.ending = "stopped"
            elif send_initial:
                state = self._state_at(rtype.kind, self._rv)
                watch.pending = [("ADDED", state[k]) for k in sorted(state) if wanted.matches(state[k])]
                if initial_flag is not None:
                    watch.pending.append(("BOOKMARK", _bookmark(rtype, self._rv, initial_events_end=True)))
            elif from_rv < self._compacted:
                watch.pending = [("ERROR", _status(410, f"too old resource version: {from_rv} ({self._compacted})"))]
                watch.ending = "ended"
            else:
                events = (e for e in self._history if e.rv > from_rv and e.kind == rtype.kind)
                watch.pending = [view for e in events if (view := _view(wanted, e)) is not None]
            if watch.ending is None:
                self._watches.add(watch)
                self._lock.notify_all()
        if watch.ending is None:
            threading.Thread(target=self._watch_for_hangup, args=(watch,), name="fake-kube-hangup",
                             daemon=True).start()
        try:
            self._stream(handler, watch, deadline)
        except OSError:
            handler.close_connection = True
        finally:
            with self._lock:
                self._watches.discard(watch)
                self._lock.notify_all()

    def _stream(self, handler: _Handler, watch: _Watch, deadline: float | None) -> None:
        """Send ``watch``'s events until it ends: cleanly at its deadline or when ended gracefully, abruptly
        otherwise."""
        next_bookmark = time.monotonic() + self._bookmark_interval
        while True:
            wake_times = [t for t in (deadline, next_bookmark if watch.bookmarks else None) if t is not None]
            with self._lock:
                self._lock.wait_for(lambda: bool(watch.pending or watch.ending or watch.bookmark_requested),
                                    timeout=max(0.0, min(wake_times) - time.monotonic()) if wake_times else None)
                lines = [_event_line(t, o) for t, o in watch.pending]
                watch.pending = []
                now = time.monotonic()
                if watch.bookmarks and (watch.bookmark_requested or now >= next_bookmark):
                    lines.append(_event_line("BOOKMARK", _bookmark(watch.rtype, self._rv)))
                    watch.bookmark_requested = False
                    next_bookmark = now + self._bookmark_interval
                ending = watch.ending
                timed_out = deadline is not None and now >= deadline
                if ending or timed_out:  # gone from active_watches() before the client can see the end
                    self._watches.discard(watch)
                    self._lock.notify_all()
            if ending in ("dropped", "stopped", "client-gone"):
                handler.close_connection = True
                return
            if lines:
                handler.send_chunk(b"".join(lines))
            if ending == "ended" or timed_out:
                handler.end_chunked()
                return

    def _watch_for_hangup(self, watch: _Watch) -> None:
        """Mark ``watch`` gone when its client closes the connection (a peek at the socket returns EOF), so
        :meth:`active_watches` counts only live ones. Exits on EOF, on error, or when the client sends
        anything (its next request on a kept-alive connection, once the watch is over)."""
        try:
            data = watch.connection.recv(1, socket.MSG_PEEK)
        except OSError:
            data = b""
        if not data:
            with self._lock:
                if watch.ending is None:
                    watch.ending = "client-gone"
                    self._lock.notify_all()


class _Handler(ReceiverHandler):
    kube: FakeKubeApiServer
    protocol_version = "HTTP/1.1"
    server_version = "otel-ebpf-FakeKubeApiServer"
    max_body_bytes = 1024 * 1024

    def _connection_registry(self) -> tuple[threading.Condition, set[socket.socket]]:
        return self.kube._lock, self.kube._connections

    def setup(self) -> None:
        super().setup()
        # Watch events are small writes; without NODELAY each would wait for the client's delayed ACK.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        self.kube._handle(self)

    def _refuse_write(self) -> None:
        try:
            self._read_body()  # drained, so keep-alive stays in step
        except (_BadRequest, OSError):
            self.close_connection = True
        self.kube._handle(self)

    do_POST = do_PUT = do_PATCH = do_DELETE = _refuse_write

    def _head(self, status: int, headers: Iterable[tuple[str, str]]) -> bytes:
        lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}", f"Server: {self.server_version}",
                 "Content-Type: application/json", "Cache-Control: no-cache, private"]
        lines += [f"{name}: {value}" for name, value in headers]
        if self.close_connection:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")

    def send_json(self, status: int, obj: Any) -> None:
        body = json.dumps(obj, separators=(",", ":")).encode("utf-8")
        try:  # one write: no Nagle stall on keep-alive
            self.wfile.write(self._head(status, [("Content-Length", str(len(body)))]) + body)
        except OSError:
            self.close_connection = True

    def start_chunked(self) -> None:
        self.wfile.write(self._head(200, [("Transfer-Encoding", "chunked")]))

    def send_chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def end_chunked(self) -> None:
        self.wfile.write(b"0\r\n\r\n")


# -- serving helpers ---------------------------------------------------------------------------------------


_CONTINUE_EXPIRED = (
    "The provided continue parameter is too old to display a consistent list result. You can start a new list "
    "without the continue parameter, or use the continue token in this response to retrieve the remainder of "
    "the results. Continuing with the provided token results in an inconsistent list - objects that were "
    "created, modified, or deleted between the time the first chunk was returned and now may show up in the list."
)


def _not_found() -> _Refused:
    return _refuse(404, "the server could not find the requested resource", details={})


def _resource_list(group: str, version: str, types: Sequence[ResourceType]) -> dict[str, Any]:
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": [
            {"name": t.plural, "singularName": t.kind.lower(), "namespaced": t.namespaced, "kind": t.kind,
             "verbs": ["get", "list", "watch"], **({"shortNames": list(t.short_names)} if t.short_names else {})}
            for t in types
        ],
    }


def _view(wanted: _Filter, event: _Event) -> tuple[str, dict[str, Any]] | None:
    """What a watch with ``wanted`` sees of ``event``, as a real server's watch cache decides it: a change
    into the selection is ADDED, out of it DELETED (the previous content at the event's resourceVersion)."""
    was_in = event.prev is not None and wanted.matches(event.prev)
    if event.type == "DELETED":
        return ("DELETED", event.obj) if was_in else None
    is_in = wanted.matches(event.obj)
    if is_in:
        return ("MODIFIED" if was_in else "ADDED"), event.obj
    if was_in:
        assert event.prev is not None
        gone = _copy(event.prev)
        gone["metadata"]["resourceVersion"] = str(event.rv)
        return "DELETED", gone
    return None


def _bookmark(rtype: ResourceType, rv: int, *, initial_events_end: bool = False) -> dict[str, Any]:
    metadata: dict[str, Any] = {"resourceVersion": str(rv)}
    if initial_events_end:
        metadata["annotations"] = {"k8s.io/initial-events-end": "true"}
    return {"kind": rtype.kind, "apiVersion": rtype.api_version, "metadata": metadata}


def _event_line(type_: str, obj: Mapping[str, Any]) -> bytes:
    return json.dumps({"type": type_, "object": obj}, separators=(",", ":")).encode("utf-8") + b"\n"


def _encode_continue(rv: int, start: str) -> str:
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": start}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _decode_continue(token: str) -> tuple[int, str]:
    try:
        decoded = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        return int(decoded["rv"]), str(decoded["start"])
    except (ValueError, KeyError, TypeError) as error:
        raise _refuse(400, f"continue key is not valid: {error}") from None


def _parse_bool(text: str) -> bool:
    """strconv.ParseBool's true spellings, as a real server reads ``watch`` and friends."""
    return text in ("1", "t", "T", "true", "TRUE", "True")


def _parse_int(text: str, name: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise _refuse(400, f"invalid {name} {text!r}") from None


def _shutdown_socket(connection: socket.socket) -> None:
    try:
        connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _copy(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy that also proves ``obj`` is JSON."""
    return json.loads(json.dumps(obj))


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- builders ----------------------------------------------------------------------------------------------

Owner = Mapping[str, Any] | tuple[str, str] | tuple[str, str, str]
"""An owner: an object dict (as a builder or ``add`` returns), ``(kind, name)`` (uid from :func:`object_uid`)
or ``(kind, name, uid)``."""


def object_uid(kind: str, namespace: str | None, name: str) -> str:
    """The uid builders give an object unless told otherwise: stable across runs, so an owner reference
    built from a name matches the owner built with the same name."""
    return str(uuid.uuid5(_UID_NAMESPACE, f"{kind}/{namespace or ''}/{name}"))


def container_id(namespace: str, pod: str, container: str = "app", *, runtime: str = "containerd") -> str:
    """The ``containerID`` :func:`make_pod` gives a container by default: ``<runtime>://<64 hex>``, stable."""
    digest = hashlib.sha256(f"{namespace}/{pod}/{container}".encode()).hexdigest()
    return f"{runtime}://{digest}"


def owner_reference(owner: Owner, *, namespace: str | None = None) -> dict[str, Any]:
    """An ``ownerReferences`` entry (controller) for ``owner``; ``namespace`` is the dependent's, used to
    derive the uid of a namespaced owner given as ``(kind, name)``."""
    if isinstance(owner, Mapping):
        meta = owner.get("metadata") or {}
        kind, name, uid = owner["kind"], meta["name"], meta.get("uid")
        api_version = owner.get("apiVersion") or _ALL_TYPES[kind].api_version
        if not uid:
            uid = object_uid(kind, meta.get("namespace"), name)
    else:
        kind, name = owner[0], owner[1]
        rtype = _ALL_TYPES.get(kind)
        if rtype is None:
            raise ValueError(f"owner kind {kind!r} unknown: pass the owner object (with apiVersion) instead")
        api_version = rtype.api_version
        uid = owner[2] if len(owner) == 3 else object_uid(kind, namespace if rtype.namespaced else None, name)
    return {"apiVersion": api_version, "kind": kind, "name": name, "uid": uid, "controller": True,
            "blockOwnerDeletion": True}


def make_object(kind: str, name: str, namespace: str | None = None, *, labels: Mapping[str, str] | None = None,
                annotations: Mapping[str, str] | None = None, owner: Owner | None = None, uid: str | None = None,
                spec: Mapping[str, Any] | None = None, status: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """An object of any served kind: apiVersion, kind, metadata (uid from :func:`object_uid` unless given),
    and ``spec``/``status`` as given."""
    rtype = _ALL_TYPES[kind]
    ns = (namespace or "default") if rtype.namespaced else None
    metadata: dict[str, Any] = {"name": name}
    if ns is not None:
        metadata["namespace"] = ns
    metadata["uid"] = uid or object_uid(kind, ns, name)
    if labels:
        metadata["labels"] = dict(labels)
    if annotations:
        metadata["annotations"] = dict(annotations)
    if owner is not None:
        metadata["ownerReferences"] = [owner_reference(owner, namespace=ns)]
    obj: dict[str, Any] = {"apiVersion": rtype.api_version, "kind": kind, "metadata": metadata}
    if spec is not None:
        obj["spec"] = _copy(spec)
    if status is not None:
        obj["status"] = _copy(status)
    return obj


def _image(container: str) -> tuple[str, str]:
    digest = hashlib.sha256(container.encode()).hexdigest()
    return f"docker.io/library/{container}:latest", f"docker.io/library/{container}@sha256:{digest}"


def _container_status(name: str, cid: str | None, phase: str, *, init: bool = False) -> dict[str, Any]:
    image, image_id = _image(name)
    status: dict[str, Any] = {"name": name, "image": image, "imageID": image_id if cid else "",
                              "restartCount": 0}
    if cid is None:
        status.update(ready=False, started=False, state={"waiting": {"reason": "ContainerCreating"}})
        return status
    status["containerID"] = cid
    if init or phase in ("Succeeded", "Failed"):
        failed = phase == "Failed" and not init
        status.update(ready=False, started=False, state={"terminated": {
            "exitCode": 1 if failed else 0, "reason": "Error" if failed else "Completed", "containerID": cid,
            "startedAt": _BUILDER_TIME, "finishedAt": _BUILDER_TIME}})
    else:
        running = phase == "Running"
        status.update(ready=running, started=running,
                      state={"running": {"startedAt": _BUILDER_TIME}} if running else
                      {"waiting": {"reason": "ContainerCreating"}})
    return status


def make_pod(name: str, namespace: str, *, ip: str | None, node: str | None,
             labels: Mapping[str, str] | None = None, annotations: Mapping[str, str] | None = None,
             owner: Owner | None = None, containers: Sequence[tuple[str, str | None]] | None = None,
             init_containers: Sequence[tuple[str, str | None]] = (), phase: str = "Running",
             uid: str | None = None, host_ip: str | None = None, extra_ips: Sequence[str] = (),
             host_network: bool = False) -> dict[str, Any]:
    """A Pod. ``containers`` are ``(name, containerID or None)`` (default: one ``app`` container with
    :func:`container_id`); a None id is a container not started yet. ``ip`` is status.podIP (None: not
    assigned), ``extra_ips`` the other families' podIPs; ``host_ip`` is status.hostIP (default: ``ip`` for a
    ``host_network`` pod, else absent); ``owner`` its controller, e.g. ``("ReplicaSet", "web-5d4f")``."""
    if containers is None:
        containers = [("app", container_id(namespace, name, "app"))]
    spec: dict[str, Any] = {
        "containers": [{"name": c, "image": _image(c)[0]} for c, _ in containers],
        "restartPolicy": "Always",
        "schedulerName": "default-scheduler",
        "serviceAccountName": "default",
    }
    if init_containers:
        spec["initContainers"] = [{"name": c, "image": _image(c)[0]} for c, _ in init_containers]
    if node is not None:
        spec["nodeName"] = node
    if host_network:
        spec["hostNetwork"] = True
    if host_ip is None and host_network:
        host_ip = ip
    ready = phase == "Running" and all(cid for _, cid in containers)
    status: dict[str, Any] = {
        "phase": phase,
        "conditions": [
            {"type": "PodScheduled", "status": "True" if node else "False"},
            {"type": "Ready", "status": "True" if ready else "False"},
        ],
        "qosClass": "BestEffort",
        "containerStatuses": [_container_status(c, cid, phase) for c, cid in containers],
    }
    if init_containers:
        status["initContainerStatuses"] = [_container_status(c, cid, phase, init=True) for c, cid in init_containers]
    if host_ip is not None:
        status["hostIP"] = host_ip
        status["hostIPs"] = [{"ip": host_ip}]
    if ip is not None:
        status["podIP"] = ip
        status["podIPs"] = [{"ip": a} for a in (ip, *extra_ips)]
    if node is not None:
        status["startTime"] = _BUILDER_TIME
    return make_object("Pod", name, namespace, labels=labels, annotations=annotations, owner=owner, uid=uid,
                       spec=spec, status=status)


def _service_port(port: int | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(port, Mapping):
        return dict(port)
    return {"name": f"tcp-{port}", "port": port, "targetPort": port, "protocol": "TCP"}


def make_service(name: str, namespace: str, *, cluster_ip: str, selector: Mapping[str, str] | None,
                 ports: Sequence[int | Mapping[str, Any]] = (80,), labels: Mapping[str, str] | None = None,
                 annotations: Mapping[str, str] | None = None, type: str = "ClusterIP",
                 uid: str | None = None) -> dict[str, Any]:
    """A Service; ``cluster_ip="None"`` makes it headless, ``selector=None`` selector-less. Ports given as
    ints are TCP, named ``tcp-<port>``, targetPort = port; a dict is taken as the ServicePort itself."""
    spec: dict[str, Any] = {
        "type": type,
        "clusterIP": cluster_ip,
        "clusterIPs": [cluster_ip],
        "ipFamilies": ["IPv6" if ":" in cluster_ip else "IPv4"],
        "ipFamilyPolicy": "SingleStack",
        "ports": [_service_port(p) for p in ports],
        "sessionAffinity": "None",
    }
    if selector is not None:
        spec["selector"] = dict(selector)
    return make_object("Service", name, namespace, labels=labels, annotations=annotations, uid=uid, spec=spec,
                       status={"loadBalancer": {}})


def _targets(namespace: str, addresses: Sequence[str], pod_names: Sequence[str | None] | None,
             node_names: Sequence[str | None] | None) -> list[tuple[str, str | None, str | None]]:
    pods = list(pod_names) if pod_names is not None else [None] * len(addresses)
    nodes = list(node_names) if node_names is not None else [None] * len(addresses)
    if len(pods) != len(addresses) or len(nodes) != len(addresses):
        raise ValueError("pod_names and node_names must be as long as addresses")
    return list(zip(addresses, pods, nodes))


def _pod_ref(namespace: str, pod: str) -> dict[str, Any]:
    return {"kind": "Pod", "namespace": namespace, "name": pod, "uid": object_uid("Pod", namespace, pod)}


def make_endpointslice(name: str, namespace: str, *, service: str, addresses: Sequence[str],
                       pod_names: Sequence[str | None] | None = None,
                       node_names: Sequence[str | None] | None = None,
                       ports: Sequence[int | Mapping[str, Any]] = (80,), ready: bool = True,
                       uid: str | None = None) -> dict[str, Any]:
    """An EndpointSlice of Service ``service`` (label ``kubernetes.io/service-name``, owned by it), one
    endpoint per address; ``pod_names[i]`` (and ``node_names[i]``) say whose address ``addresses[i]`` is."""
    endpoints = []
    for address, pod, node in _targets(namespace, addresses, pod_names, node_names):
        endpoint: dict[str, Any] = {"addresses": [address],
                                    "conditions": {"ready": ready, "serving": ready, "terminating": False}}
        if pod is not None:
            endpoint["targetRef"] = _pod_ref(namespace, pod)
        if node is not None:
            endpoint["nodeName"] = node
        endpoints.append(endpoint)
    obj = make_object(
        "EndpointSlice", name, namespace, uid=uid, owner=("Service", service),
        labels={"kubernetes.io/service-name": service,
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"},
    )
    obj["addressType"] = "IPv6" if addresses and ":" in addresses[0] else "IPv4"
    obj["endpoints"] = endpoints
    obj["ports"] = [{k: v for k, v in _service_port(p).items() if k != "targetPort"} for p in ports]
    return obj


def make_endpoints(name: str, namespace: str, *, addresses: Sequence[str],
                   pod_names: Sequence[str | None] | None = None, node_names: Sequence[str | None] | None = None,
                   ports: Sequence[int | Mapping[str, Any]] = (80,), uid: str | None = None) -> dict[str, Any]:
    """An Endpoints (named as its Service) with one ready subset holding ``addresses``."""
    entries = []
    for address, pod, node in _targets(namespace, addresses, pod_names, node_names):
        entry: dict[str, Any] = {"ip": address}
        if pod is not None:
            entry["targetRef"] = _pod_ref(namespace, pod)
        if node is not None:
            entry["nodeName"] = node
        entries.append(entry)
    obj = make_object("Endpoints", name, namespace, uid=uid)
    ports_ = [{k: v for k, v in _service_port(p).items() if k != "targetPort"} for p in ports]
    obj["subsets"] = [{"addresses": entries, "ports": ports_}] if entries else []
    return obj


def make_node(name: str, *, internal_ip: str, labels: Mapping[str, str] | None = None,
              pod_cidr: str | None = None, uid: str | None = None) -> dict[str, Any]:
    """A Ready Linux Node with an InternalIP and a Hostname address."""
    spec: dict[str, Any] = {}
    if pod_cidr is not None:
        spec.update(podCIDR=pod_cidr, podCIDRs=[pod_cidr])
    status = {
        "addresses": [{"type": "InternalIP", "address": internal_ip}, {"type": "Hostname", "address": name}],
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
        "nodeInfo": {
            "architecture": "amd64", "bootID": object_uid("Boot", None, name),
            "containerRuntimeVersion": "containerd://1.7.0", "kernelVersion": "6.8.0",
            "kubeProxyVersion": "", "kubeletVersion": KUBERNETES_VERSION["gitVersion"],
            "machineID": hashlib.md5(name.encode()).hexdigest(), "operatingSystem": "linux",
            "osImage": "Fake Linux", "systemUUID": object_uid("System", None, name),
        },
    }
    all_labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                  **(labels or {})}
    return make_object("Node", name, labels=all_labels, uid=uid, spec=spec, status=status)


def make_namespace(name: str, *, labels: Mapping[str, str] | None = None, uid: str | None = None) -> dict[str, Any]:
    """An Active Namespace, labelled ``kubernetes.io/metadata.name`` as a real server does."""
    return make_object("Namespace", name, labels={"kubernetes.io/metadata.name": name, **(labels or {})},
                       uid=uid, spec={"finalizers": ["kubernetes"]}, status={"phase": "Active"})


def _pod_template(labels: Mapping[str, str], *, restart_policy: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "app", "image": _image("app")[0]}]}
    if restart_policy is not None:
        spec["restartPolicy"] = restart_policy
    return {"metadata": {"labels": dict(labels)}, "spec": spec}


def _selected(name: str, labels: Mapping[str, str] | None, selector: Mapping[str, str] | None) -> tuple[
        dict[str, str], dict[str, str]]:
    selector = dict(selector or labels or {"app": name})
    return dict(labels or selector), selector


def make_deployment(name: str, namespace: str, *, labels: Mapping[str, str] | None = None,
                    selector: Mapping[str, str] | None = None, replicas: int = 1,
                    uid: str | None = None) -> dict[str, Any]:
    """A Deployment selecting ``selector`` (default: ``labels`` or ``{"app": name}``)."""
    labels_, selector_ = _selected(name, labels, selector)
    return make_object("Deployment", name, namespace, labels=labels_, uid=uid,
                       spec={"replicas": replicas, "selector": {"matchLabels": selector_},
                             "template": _pod_template(selector_)},
                       status={"replicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas})


def make_replicaset(name: str, namespace: str, *, owner_deployment: str | Mapping[str, Any] | None = None,
                    labels: Mapping[str, str] | None = None, selector: Mapping[str, str] | None = None,
                    replicas: int = 1, uid: str | None = None) -> dict[str, Any]:
    """A ReplicaSet, owned by ``owner_deployment`` (a Deployment's name or object) if given."""
    labels_, selector_ = _selected(name, labels, selector)
    owner: Owner | None = None
    if isinstance(owner_deployment, str):
        owner = ("Deployment", owner_deployment)
    elif owner_deployment is not None:
        owner = owner_deployment
    return make_object("ReplicaSet", name, namespace, labels=labels_, owner=owner, uid=uid,
                       spec={"replicas": replicas, "selector": {"matchLabels": selector_},
                             "template": _pod_template(selector_)},
                       status={"replicas": replicas, "readyReplicas": replicas})


def make_statefulset(name: str, namespace: str, *, service_name: str | None = None,
                     labels: Mapping[str, str] | None = None, selector: Mapping[str, str] | None = None,
                     replicas: int = 1, uid: str | None = None) -> dict[str, Any]:
    """A StatefulSet governed by headless Service ``service_name`` (default: ``name``)."""
    labels_, selector_ = _selected(name, labels, selector)
    return make_object("StatefulSet", name, namespace, labels=labels_, uid=uid,
                       spec={"replicas": replicas, "serviceName": service_name or name,
                             "selector": {"matchLabels": selector_}, "template": _pod_template(selector_)},
                       status={"replicas": replicas, "readyReplicas": replicas})


def make_daemonset(name: str, namespace: str, *, labels: Mapping[str, str] | None = None,
                   selector: Mapping[str, str] | None = None, nodes: int = 1,
                   uid: str | None = None) -> dict[str, Any]:
    """A DaemonSet scheduled on ``nodes`` nodes."""
    labels_, selector_ = _selected(name, labels, selector)
    return make_object("DaemonSet", name, namespace, labels=labels_, uid=uid,
                       spec={"selector": {"matchLabels": selector_}, "template": _pod_template(selector_)},
                       status={"currentNumberScheduled": nodes, "desiredNumberScheduled": nodes,
                               "numberMisscheduled": 0, "numberReady": nodes})


def make_job(name: str, namespace: str, *, owner_cronjob: str | Mapping[str, Any] | None = None,
             labels: Mapping[str, str] | None = None, uid: str | None = None) -> dict[str, Any]:
    """A running Job, owned by ``owner_cronjob`` (a CronJob's name or object) if given."""
    labels_ = dict(labels or {"job-name": name})
    owner: Owner | None = ("CronJob", owner_cronjob) if isinstance(owner_cronjob, str) else owner_cronjob
    return make_object("Job", name, namespace, labels=labels_, owner=owner, uid=uid,
                       spec={"completions": 1, "parallelism": 1, "backoffLimit": 6,
                             "template": _pod_template(labels_, restart_policy="Never")},
                       status={"active": 1, "startTime": _BUILDER_TIME})


def make_cronjob(name: str, namespace: str, *, schedule: str = "*/5 * * * *",
                 labels: Mapping[str, str] | None = None, uid: str | None = None) -> dict[str, Any]:
    """A CronJob on ``schedule``."""
    return make_object("CronJob", name, namespace, labels=labels, uid=uid,
                       spec={"schedule": schedule, "concurrencyPolicy": "Allow", "suspend": False,
                             "jobTemplate": {"spec": {"template": _pod_template({}, restart_policy="Never")}}},
                       status={})


def make_virtual_service(name: str, namespace: str, *, hosts: Sequence[str],
                         http: Sequence[Mapping[str, Any]] | None = None, gateways: Sequence[str] | None = None,
                         uid: str | None = None) -> dict[str, Any]:
    """An Istio VirtualService (networking.istio.io/v1); ``http`` defaults to one route to ``hosts[0]``."""
    spec: dict[str, Any] = {"hosts": list(hosts),
                            "http": [dict(r) for r in http] if http is not None else
                            [{"route": [{"destination": {"host": hosts[0]}}]}]}
    if gateways is not None:
        spec["gateways"] = list(gateways)
    return make_object("VirtualService", name, namespace, uid=uid, spec=spec)


def make_destination_rule(name: str, namespace: str, *, host: str,
                          subsets: Sequence[Mapping[str, Any]] | None = None,
                          traffic_policy: Mapping[str, Any] | None = None,
                          uid: str | None = None) -> dict[str, Any]:
    """An Istio DestinationRule (networking.istio.io/v1) for ``host``."""
    spec: dict[str, Any] = {"host": host}
    if subsets is not None:
        spec["subsets"] = [dict(s) for s in subsets]
    if traffic_policy is not None:
        spec["trafficPolicy"] = dict(traffic_policy)
    return make_object("DestinationRule", name, namespace, uid=uid, spec=spec)
