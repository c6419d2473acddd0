"""List + watch of one Kubernetes resource type, keeping slim records: an informer.

Usage::

    from kubernetes import client, config
    config.load_kube_config()                       # or config.load_incluster_config()
    pods = Informer(client.ApiClient(), PODS, slim=slim_pod, field_selector="spec.nodeName=node-1")
    pods.start()
    pods.synced.wait(10)
    record = pods.get("default", "checkout-7d9f")   # whatever slim_pod returned, or None

Semantics, as client-go's reflector:

* **List, then watch from the list's resourceVersion.** Lists are paginated (``limit`` +
  ``continue``) so a 10,000-pod cluster never arrives as one response. Objects are read as raw
  JSON (the client's typed models are never built: they cost kilobytes per pod) and reduced at
  once by ``slim`` to the few fields the agent uses.
* **Watch with bookmarks** (``allowWatchBookmarks``): the server sends the current
  resourceVersion now and then, so a resumed watch does not start from a stale one.
* **A watch that ends** (server timeout, dropped connection) resumes from the last
  resourceVersion seen, after a short jittered backoff on errors. It does not relist.
* **410 Gone** (the resourceVersion was compacted away) is the only reason to relist. The new list
  replaces the store; objects absent from it are reported deleted. Relists are spaced by a
  jittered backoff so that many agents do not relist at the same instant.
* Memory is bounded by what ``slim`` keeps; the raw JSON of an object is dropped as soon as it is
  reduced.

``on_change(kind, old, new)`` is called on the informer's thread for every change (``old`` None
for an addition, ``new`` None for a deletion). The store is read lock-free: a dict replaced or
updated in place under the GIL.
"""

from __future__ import annotations

import json
import logging
import random
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode
from ..threads import name_os_thread

__all__ = ["Informer", "ResourceSpec", "WatchExpired"]

log = logging.getLogger(__name__)

LIST_PAGE = 500  # objects per list page
WATCH_TIMEOUT_S = 300  # server-side watch timeout; the watch is resumed from its resourceVersion
READ_TIMEOUT_S = WATCH_TIMEOUT_S + 30  # client-side: a silent connection is given up after this
BACKOFF_MIN_S = 0.2
BACKOFF_MAX_S = 30.0


@dataclass(frozen=True)
class ResourceSpec:
    kind: str
    path: str  # cluster-wide collection, e.g. /api/v1/pods or /apis/apps/v1/replicasets
    namespaced: bool = True


class WatchExpired(Exception):
    """The server answered 410 Gone: the resourceVersion is too old; relist."""


class _ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


class Informer:
    def __init__(
        self,
        api_client,
        spec: ResourceSpec,
        *,
        slim: Callable[[dict], Any],
        field_selector: str | None = None,
        label_selector: str | None = None,
        on_change: Callable[[str, Any, Any], None] | None = None,
        watch_timeout_s: int = WATCH_TIMEOUT_S,
        rng: random.Random | None = None,
    ) -> None:
        self._api = api_client
        self.spec = spec
        self._slim = slim
        self._field_selector = field_selector
        self._label_selector = label_selector
        self._on_change = on_change
        self._watch_timeout_s = watch_timeout_s
        self._rng = rng or random.Random()
        self.store: dict[tuple[str, str], Any] = {}
        self.resource_version = ""
        self.synced = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._response = None
        # counters
        self.lists = 0
        self.relists = 0  # lists caused by 410 Gone
        self.watches = 0
        self.watch_errors = 0
        self.events = 0
        self.bookmarks = 0
        self.decode_errors = 0

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start (or, after stop(), resume) listing and watching on a daemon thread."""
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=f"otel-ebpf-informer-{self.spec.kind}",
                                            daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop watching (closes the open watch connection). Safe twice and before start."""
        self.signal_stop()
        self.join(timeout_s)

    def signal_stop(self) -> None:
        """Ask the thread to end and close its watch connection; returns at once."""
        self._stop.set()
        response = self._response
        if response is not None:
            try:
                # shutdown() first: close() alone does not wake a thread blocked reading the socket
                sock = getattr(getattr(response, "_fp", None), "fp", None)
                raw = getattr(sock, "raw", None)
                conn = getattr(raw, "_sock", None)
                if conn is not None:
                    conn.shutdown(socket.SHUT_RDWR)
                response.close()
            except Exception:  # noqa: BLE001 -- closing an already broken connection
                pass

    def join(self, timeout_s: float) -> None:
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)

    def get(self, namespace: str, name: str) -> Any:
        return self.store.get((namespace, name))

    def values(self) -> list[Any]:
        return list(self.store.values())

    def counters(self) -> dict[str, int]:
        return {"lists": self.lists, "relists": self.relists, "watches": self.watches,
                "watch_errors": self.watch_errors, "events": self.events, "bookmarks": self.bookmarks,
                "decode_errors": self.decode_errors, "objects": len(self.store)}

    # -- the loop -------------------------------------------------------------------------------

    def _run(self) -> None:
        name_os_thread()
        backoff = BACKOFF_MIN_S
        need_list = not self.synced.is_set()  # a restarted informer resumes its watch
        while not self._stop.is_set():
            try:
                if need_list:
                    self._list()
                    need_list = False
                    self.synced.set()
                self._watch()
                backoff = BACKOFF_MIN_S  # a clean end (server timeout): resume at once
            except WatchExpired:
                self.relists += 1
                need_list = True
                self._sleep(self._jitter(BACKOFF_MIN_S))  # spread relists of many agents
            except Exception as exc:  # noqa: BLE001 -- network, server errors: back off and retry
                if self._stop.is_set():
                    break
                self.watch_errors += 1
                log.debug("informer %s: %s (retrying in %.1fs)", self.spec.kind, exc, backoff)
                self._sleep(self._jitter(backoff))
                backoff = min(BACKOFF_MAX_S, backoff * 2)

    def _jitter(self, seconds: float) -> float:
        return seconds * (0.5 + self._rng.random())

    def _sleep(self, seconds: float) -> None:
        self._stop.wait(seconds)

    def _query(self, **params: Any) -> str:
        query: dict[str, Any] = {}
        if self._field_selector:
            query["fieldSelector"] = self._field_selector
        if self._label_selector:
            query["labelSelector"] = self._label_selector
        query.update({k: v for k, v in params.items() if v is not None})
        return urlencode(query)

    def _request(self, query: str, *, timeout: float):
        method, url, headers, body, post = self._api.param_serialize(
            method="GET", resource_path=self.spec.path, header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"])
        url = f"{url}?{query}" if query else url
        return self._api.call_api(method, url, header_params=headers, body=body, post_params=post,
                                  _request_timeout=timeout)

    def _list(self) -> None:
        fresh: dict[tuple[str, str], Any] = {}
        token = None
        while True:
            response = self._request(self._query(limit=LIST_PAGE, **{"continue": token}), timeout=60)
            data = response.read()
            if response.status == 410:
                # an expired continue token: start the list again
                raise WatchExpired()
            if response.status != 200:
                raise _ApiError(response.status, data[:200].decode("utf-8", "replace"))
            page = json.loads(data)
            del data
            for obj in page.get("items") or ():
                key = _key(obj)
                try:
                    fresh[key] = self._slim(obj)
                except Exception:  # noqa: BLE001 -- an object of unexpected shape: skipped, counted
                    self.decode_errors += 1
            meta = page.get("metadata") or {}
            token = meta.get("continue")
            if not token:
                self.resource_version = meta.get("resourceVersion", "")
                break
        self.lists += 1
        old, self.store = self.store, fresh
        if self._on_change is not None:
            for key, record in fresh.items():
                before = old.get(key)
                if before != record:
                    self._notify(before, record)
            for key, record in old.items():
                if key not in fresh:
                    self._notify(record, None)

    def _watch(self) -> None:
        query = self._query(watch="true", resourceVersion=self.resource_version or None,
                            allowWatchBookmarks="true", timeoutSeconds=self._watch_timeout_s)
        response = self._request(query, timeout=READ_TIMEOUT_S)
        if response.status == 410:
            raise WatchExpired()
        if response.status != 200:
            raise _ApiError(response.status, response.read()[:200].decode("utf-8", "replace"))
        self.watches += 1
        raw = response.response  # urllib3 response, not preloaded: read line by line
        self._response = raw
        try:
            buf = b""
            for chunk in raw.stream(65536, decode_content=True):
                if self._stop.is_set():
                    return
                buf += chunk
                while True:
                    nl = buf.find(b"\n")
                    if nl < 0:
                        break
                    line, buf = buf[:nl], buf[nl + 1:]
                    if line.strip():
                        self._event(line)
            if buf.strip():
                self._event(buf)
        finally:
            self._response = None
            raw.release_conn()

    def _event(self, line: bytes) -> None:
        try:
            event = json.loads(line)
            kind = event["type"]
            obj = event["object"]
        except (ValueError, KeyError, TypeError):
            self.decode_errors += 1
            return
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise WatchExpired()
            raise _ApiError(obj.get("code") or 500, obj.get("message", "watch error"))
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        if kind == "BOOKMARK":
            self.bookmarks += 1
            if rv:
                self.resource_version = rv
            return
        self.events += 1
        key = _key(obj)
        if kind in ("ADDED", "MODIFIED"):
            try:
                record = self._slim(obj)
            except Exception:  # noqa: BLE001
                self.decode_errors += 1
                record = None
            if record is not None:
                before = self.store.get(key)
                self.store[key] = record
                if before != record:
                    self._notify(before, record)
        elif kind == "DELETED":
            before = self.store.pop(key, None)
            if before is not None:
                self._notify(before, None)
        if rv:
            self.resource_version = rv

    def _notify(self, old: Any, new: Any) -> None:
        if self._on_change is None:
            return
        try:
            self._on_change(self.spec.kind, old, new)
        except Exception:  # noqa: BLE001 -- an index bug must not stop the informer
            log.exception("informer %s: on_change failed", self.spec.kind)


def _key(obj: dict) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return sys.intern(meta.get("namespace", "")), meta.get("name", "")
