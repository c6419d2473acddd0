"""pid -> container -> pod, from the process's cgroup path.

Usage::

    from otel_ebpf.kube.cgroup import ContainerResolver, container_from_cgroup_path

    resolver = ContainerResolver()          # proc_root="/proc", max_entries=65536
    ref = resolver.for_pid(pid)             # reads /proc/<pid>/cgroup once, then from the LRU
    ref.runtime, ref.container_id           # "containerd", "5f0c...e1" (64 lowercase hex)
    ref.pod_uid, ref.qos                    # "1b2c3d4e-5f6a-7b8c-9d0e-1f2a3b4c5d6e", "burstable"
    resolver.forget(pid)                    # on process exit: pids are reused

    container_from_cgroup_path(
        "/kubepods.slice/kubepods-besteffort.slice"
        "/kubepods-besteffort-pod1b2c3d4e_5f6a_7b8c_9d0e_1f2a3b4c5d6e.slice/crio-0f3e...9a.scope"
    )                                       # ContainerRef("cri-o", "0f3e...9a", "1b2c3d4e-...", "besteffort")

The parsers (:func:`parse_proc_cgroup`, :func:`container_from_cgroup_path`,
:func:`container_from_proc_cgroup`) are sans-I/O: text in, values out. Only
:class:`ContainerResolver` and the cgroup-building helpers at the end touch the file system.

Where the kubelet puts a container (``tests/fixtures/cgroup/README.md`` has one real file per case):
the kubelet creates ``<cgroup-root>/kubepods[/<qos>]/pod<uid>`` and the runtime puts each container
in a child of it. The systemd driver spells every level as a slice whose name repeats its
ancestors, with the uid's dashes turned into underscores (a dash separates levels in a slice name):

- systemd driver, containerd: ``/kubepods.slice/kubepods-burstable.slice/``
  ``kubepods-burstable-pod<u_i_d>.slice/cri-containerd-<id>.scope``; guaranteed pods have no qos
  level (``/kubepods.slice/kubepods-pod<u_i_d>.slice/...``);
- systemd driver, CRI-O: ``.../crio-<id>.scope`` (crun may add a ``/container`` sub-cgroup), and
  ``crio-conmon-<id>.scope`` beside it for the monitor;
- systemd driver, dockershim / cri-dockerd: ``.../docker-<id>.scope``;
- cgroupfs driver (kubeadm with cgroupfs, k3s, rke2): ``/kubepods/burstable/pod<u-i-d>/<id>``,
  ``/kubepods/pod<u-i-d>/<id>``; CRI-O names its level ``crio-<id>``;
- kind (a docker container running systemd is the node, kubelet cgroup-root ``/kubelet``):
  ``/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/``
  ``kubelet-kubepods-besteffort-pod<u_i_d>.slice/cri-containerd-<id>.scope``, and seen from the
  host the same below ``/system.slice/docker-<node>.scope/``; minikube and k3d nodes likewise put
  their ``kubepods.slice/...`` or ``kubepods/...`` below the node container's level.

The rules, in order:

1. The pod level is found anywhere in the path: a ``pod<uid>`` directory whose parent is
   ``kubepods`` or ``kubepods/{burstable,besteffort}`` (cgroupfs), or a
   ``...kubepods[-burstable|-besteffort]-pod<u_i_d>.slice`` (systemd, whose name spells the
   ancestors, so kind's ``kubelet-kubepods-...`` matches too). The outermost one wins: it
   belongs to the kubelet whose tree the agent sees from its cgroup namespace.
2. Under a pod, the container is the pod level's *direct child*; anything deeper (crun's
   ``container`` sub-cgroup, systemd's ``init.scope`` in a systemd-in-a-container, a nested
   docker) belongs to that container. A process in the pod level itself, or in a child that is
   no container, resolves to ``None``.
3. A container level *above* a pod level (kind, minikube, k3d seen from the host) is a
   Kubernetes node, not a workload: rule 1 wins.
4. Without a pod level, the outermost container level is the container (``/docker/<id>``,
   ``/system.slice/docker-<id>.scope``, podman's ``libpod-<id>.scope``): it is the one the
   runtime on the agent's host knows (docker-in-docker's inner containers are not).

Container levels: ``<prefix>-<64 hex>[.scope]`` or a bare ``<64 hex>``. The prefix names the
runtime: ``cri-containerd`` → containerd, ``crio`` → cri-o, ``docker`` → docker, any other
(``libpod``, ``nerdctl``...) → unknown. A bare id is docker below ``/docker/``, else unknown:
the cgroupfs driver spells containerd's and docker's containers the same way.

**conmon is not a container.** CRI-O (and podman) run a monitor per container in a sibling
scope ``crio-conmon-<id>.scope`` (``libpod-conmon-<id>.scope``) that carries the id of the
container it watches. Its traffic is the runtime's, not the workload's, so a conmon level
resolves to ``None``, never to the watched container. (CRI-O's default ``conmon_cgroup`` puts
it in ``system.slice``; OpenShift sets ``pod``, which puts it under the pod slice.)

**Static pods** (the control plane on kubeadm nodes) run under the kubelet's own uid for them,
a 32-hex config hash without dashes (``pod3d8f1c0e9b7a65d4c3b2a1f0e9d8c7b6``), returned as-is.
In the API the mirror pod has another ``metadata.uid``; the hash is in its
``kubernetes.io/config.mirror`` annotation, which is what to join on.

**Cgroup namespaces.** Paths in ``/proc/<pid>/cgroup`` are relative to the *reader's* cgroup
namespace: an agent in its own namespace sees other pods as ``/../../../kubepods-besteffort.slice/...``
(systemd) or ``/../../../besteffort/pod<uid>/<id>`` (cgroupfs). The rules search segments, not a
prefix, so the systemd form still resolves fully; in the cgroupfs form a ``..`` stands in for
the ``kubepods`` level it hides, and ``qos`` is ``None`` when the ``..`` hides the qos level too.
Run the agent in the host's cgroup namespace to see whole paths.

Which line of ``/proc/<pid>/cgroup``: v2 has one (``0::/path``); v1 has one per hierarchy, and a
hybrid host has both. The lines are tried in this order and the first that resolves wins: the
v2 line, ``name=systemd``, lines with cpu/cpuacct/memory, the rest. Trying them all matters on
hybrid hosts with the cgroupfs driver: runc places the container in the v1 hierarchies only,
and its v2 line stays the shim's ``0::/system.slice/containerd.service``.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = [
    "ContainerRef",
    "ContainerResolver",
    "QosClass",
    "Runtime",
    "cgroup_v2_mount",
    "container_from_cgroup_path",
    "container_from_proc_cgroup",
    "make_pod_cgroup",
    "move_pid",
    "parse_proc_cgroup",
    "remove_cgroup",
]

Runtime = Literal["containerd", "cri-o", "docker", "unknown"]
QosClass = Literal["guaranteed", "burstable", "besteffort"]

# /proc/<pid>/cgroup is one line per hierarchy (at most ~16 on v1, each a path of at most
# PATH_MAX); 64 KiB holds any real one, and bounds what a bogus proc_root can make us read.
_MAX_CGROUP_FILE = 64 * 1024

_CONTAINER_ID = r"[0-9a-f]{64}"
_BARE_ID_RE = re.compile(_CONTAINER_ID)
# (all matched whole) "<prefix>-<id>" with an optional ".scope": cri-containerd-<id>.scope, crio-<id>, crio-conmon-<id>.scope
_PREFIXED_ID_RE = re.compile(rf"(?P<prefix>[a-z][a-z0-9_-]*?)-(?P<id>{_CONTAINER_ID})(?:\.scope)?")
_RUNTIME_BY_PREFIX: dict[str, Runtime] = {"cri-containerd": "containerd", "crio": "cri-o", "docker": "docker"}
_CONMON = "conmon"  # crio-conmon-<id>.scope, libpod-conmon-<id>.scope

# A kubelet pod uid: a UUID from the API server, or a 32-hex config hash for static pods.
_HEX32 = r"[0-9a-f]{32}"
_UUID_DASHED = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_UUID_UNDERSCORED = r"[0-9a-f]{8}_[0-9a-f]{4}_[0-9a-f]{4}_[0-9a-f]{4}_[0-9a-f]{12}"
_CGROUPFS_POD_RE = re.compile(rf"pod(?P<uid>{_UUID_DASHED}|{_HEX32})")
_SYSTEMD_POD_RE = re.compile(rf"(?P<parent>[a-z0-9_.-]+)-pod(?P<uid>{_UUID_UNDERSCORED}|{_HEX32})\.slice")
_KUBEPODS = "kubepods"
_QOS_LEVELS: frozenset[str] = frozenset(("burstable", "besteffort"))
_DELETED_SUFFIX = " (deleted)"  # v2 shows it for a task whose cgroup was removed (zombies)

_V2_LINE, _SYSTEMD_LINE, _CPU_MEMORY_LINE, _OTHER_LINE = range(4)
_CPU_MEMORY_CONTROLLERS = frozenset(("cpu", "cpuacct", "memory"))


@dataclass(frozen=True, slots=True)
class ContainerRef:
    """A container, and its pod when the kubelet made it.

    ``container_id`` is the runtime's 64-hex id (the one in ``status.containerStatuses[].containerID``
    after ``<runtime>://``). ``pod_uid`` is ``None`` outside Kubernetes; ``qos`` is ``None`` when
    there is no pod or its level could not be told.
    """

    runtime: Runtime
    container_id: str
    pod_uid: str | None = None
    qos: QosClass | None = None


def parse_proc_cgroup(text: str) -> list[tuple[int, str, str]]:
    """``/proc/<pid>/cgroup`` content -> ``[(hierarchy_id, controllers, path), ...]`` in file order.

    ``controllers`` is the comma-separated list as written (``"cpu,cpuacct"``, ``"name=systemd"``,
    ``""`` for the v2 line ``0::/path``). Blank lines are skipped; a line that is not
    ``<int>:<controllers>:<path>`` raises :class:`ValueError` (the kernel never writes one, so
    the text is not a cgroup file). The path may itself contain ``:``.
    """
    entries: list[tuple[int, str, str]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split(":", 2)
        if len(parts) != 3 or not parts[0].isdigit() or not parts[2].startswith("/"):
            raise ValueError(f"line {number} of a cgroup file is not <id>:<controllers>:<path>: {line!r}")
        entries.append((int(parts[0]), parts[1], parts[2]))
    return entries


def container_from_proc_cgroup(text: str) -> ContainerRef | None:
    """The container of a ``/proc/<pid>/cgroup`` content (line preference in the module docstring)."""
    entries = parse_proc_cgroup(text)
    for _, _, path in sorted(entries, key=_line_preference):  # sorted() is stable: file order within a rank
        ref = container_from_cgroup_path(path)
        if ref is not None:
            return ref
    return None


def container_from_cgroup_path(path: str) -> ContainerRef | None:
    """The container a cgroup path belongs to, or ``None`` (host process, pod level, conmon)."""
    path = path.removesuffix(_DELETED_SUFFIX)
    segments = [s for s in path.split("/") if s and s != "."]
    for index in range(len(segments)):
        pod = _pod_level(segments, index)
        if pod is not None:
            return _pod_container(segments, index, *pod)
    for index, segment in enumerate(segments):
        if _is_conmon(segment):
            return None
        ref = _container_level(segment, parent=segments[index - 1] if index else "")
        if ref is not None:
            return ref
    return None


class ContainerResolver:
    """pid -> :class:`ContainerRef`, from ``{proc_root}/{pid}/cgroup``, behind a bounded LRU.

    Caching: a container found is kept until :meth:`forget` or eviction (a process does not
    leave its container, but its pid is reused after it exits: call :meth:`forget` on exit).
    ``None`` for a living process (a host process) is kept only ``negative_ttl_s``, because a
    process can be moved into a container cgroup after it is first seen (runc forks ``runc
    init`` in the shim's cgroup and moves it into the container's a moment later; tools and
    tests move pids). A vanished pid (no ``/proc/<pid>``) is answered ``None`` and not kept,
    since the pid may be reused at once. An unreadable or malformed file is counted in
    ``errors``, answered ``None`` and not kept.

    Counters: ``lookups`` (every call), ``misses`` (lookups that read ``/proc``), ``errors``,
    ``evictions`` (LRU bound reached). Thread-safe.
    """

    def __init__(
        self,
        *,
        proc_root: str = "/proc",
        max_entries: int = 65536,
        negative_ttl_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be positive")
        if negative_ttl_s < 0:
            raise ValueError("negative_ttl_s must not be negative")
        self._proc_root = proc_root.rstrip("/") or "/"
        self._max_entries = max_entries
        self._negative_ttl_s = negative_ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        # pid -> (result, expiry); expiry is None for a container found (kept until forget/eviction)
        self._entries: OrderedDict[int, tuple[ContainerRef | None, float | None]] = OrderedDict()
        self.lookups = 0
        self.misses = 0
        self.errors = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def for_pid(self, pid: int) -> ContainerRef | None:
        now = self._clock()
        with self._lock:
            self.lookups += 1
            entry = self._entries.get(pid)
            if entry is not None:
                ref, expiry = entry
                if expiry is None or now < expiry:
                    self._entries.move_to_end(pid)
                    return ref
                del self._entries[pid]
            self.misses += 1
        try:
            with open(f"{self._proc_root}/{pid}/cgroup", encoding="utf-8", errors="surrogateescape") as f:
                text = f.read(_MAX_CGROUP_FILE)
        except (FileNotFoundError, ProcessLookupError):
            return None  # vanished: not cached, the pid may be reused at once
        except OSError:
            with self._lock:
                self.errors += 1
            return None
        try:
            ref = container_from_proc_cgroup(text)
        except ValueError:
            with self._lock:
                self.errors += 1
            return None
        with self._lock:
            self._entries[pid] = (ref, None if ref is not None else now + self._negative_ttl_s)
            self._entries.move_to_end(pid)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)
                self.evictions += 1
        return ref

    def forget(self, pid: int) -> None:
        """Drop a pid (call it when the process exits)."""
        with self._lock:
            self._entries.pop(pid, None)


# --- building kubelet-shaped cgroups (kernel tests, demos) ---------------------------------------


def cgroup_v2_mount(*, mountinfo: str = "/proc/self/mountinfo") -> Path | None:
    """Where the cgroup2 hierarchy is mounted (``/sys/fs/cgroup`` on v2 hosts,
    ``/sys/fs/cgroup/unified`` on hybrid ones), or ``None`` (v1-only host, or no mount)."""
    try:
        with open(mountinfo, encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
    except OSError:
        return None
    mounts = _cgroup2_mount_points(text.splitlines())
    return Path(mounts[0]) if mounts else None


def make_pod_cgroup(
    root: Path,
    pod_uid: str,
    container_id: str,
    *,
    qos: QosClass = "burstable",
    driver: Literal["systemd", "cgroupfs"] = "systemd",
    runtime: Runtime = "containerd",
) -> Path:
    """Create the kubelet's and runtime's directories for one container below ``root``; return
    the container's directory.

    ``root`` stands for the kubelet's cgroup root: the cgroup2 mount itself, or (safer, and what
    the tests do) a test-owned directory below it, which the parser finds just as well. The
    directories are plain ``mkdir``\\ s: on a cgroup file system they are cgroups, elsewhere
    they only show the layout. Remove them with :func:`remove_cgroup` on the top directory
    you own.
    """
    if not re.fullmatch(_UUID_DASHED, pod_uid) and not re.fullmatch(_HEX32, pod_uid):
        raise ValueError(f"pod_uid must be a lowercase dashed UUID or 32 hex digits: {pod_uid!r}")
    if not _BARE_ID_RE.fullmatch(container_id):
        raise ValueError(f"container_id must be 64 lowercase hex digits: {container_id!r}")
    if qos not in ("guaranteed", "burstable", "besteffort"):
        raise ValueError(f"qos must be guaranteed, burstable or besteffort: {qos!r}")
    if driver == "systemd":
        prefix = {"containerd": "cri-containerd", "cri-o": "crio", "docker": "docker"}.get(runtime)
        if prefix is None:
            raise ValueError(f"no systemd scope name for runtime {runtime!r}")
        levels = [f"{_KUBEPODS}.slice"]
        parent = _KUBEPODS
        if qos != "guaranteed":
            parent = f"{_KUBEPODS}-{qos}"
            levels.append(f"{parent}.slice")
        levels += [f"{parent}-pod{pod_uid.replace('-', '_')}.slice", f"{prefix}-{container_id}.scope"]
    elif driver == "cgroupfs":
        levels = [_KUBEPODS] + ([] if qos == "guaranteed" else [qos]) + [f"pod{pod_uid}"]
        levels.append(f"crio-{container_id}" if runtime == "cri-o" else container_id)
    else:
        raise ValueError(f"driver must be systemd or cgroupfs: {driver!r}")
    path = Path(root).joinpath(*levels)
    path.mkdir(parents=True, exist_ok=True)
    return path


def move_pid(path: Path, pid: int) -> None:
    """Move a process into the cgroup ``path`` (one write to its ``cgroup.procs``)."""
    with open(Path(path) / "cgroup.procs", "w", encoding="ascii") as f:
        f.write(f"{pid}\n")


def remove_cgroup(path: Path) -> None:
    """Remove the cgroup ``path`` and every cgroup below it, deepest first.

    A cgroup directory goes with ``rmdir`` even though it lists control files (they cannot
    be unlinked, so ``shutil.rmtree`` fails on it). Each must be empty of processes (else
    ``EBUSY``: move or kill them first). A ``path`` that does not exist is no error.
    """
    path = Path(path)
    if not path.is_dir():
        return
    for directory, _, _ in os.walk(path, topdown=False):
        try:
            os.rmdir(directory)
        except FileNotFoundError:
            pass


# --- private --------------------------------------------------------------------------------------


def _line_preference(entry: tuple[int, str, str]) -> int:
    hierarchy_id, controllers, _ = entry
    if hierarchy_id == 0 and not controllers:
        return _V2_LINE
    names = controllers.split(",")
    if "name=systemd" in names:
        return _SYSTEMD_LINE
    if _CPU_MEMORY_CONTROLLERS.intersection(names):
        return _CPU_MEMORY_LINE
    return _OTHER_LINE


def _pod_level(segments: list[str], index: int) -> tuple[str, QosClass | None] | None:
    """(pod uid, qos) when ``segments[index]`` is a kubelet pod level, else None."""
    segment = segments[index]
    match = _SYSTEMD_POD_RE.fullmatch(segment)
    if match is not None:
        # The slice name spells its ancestors: kubepods[-qos], or <root>-kubepods[-qos] (kind: kubelet-kubepods)
        levels = match["parent"].split("-")
        if levels[-1] == _KUBEPODS:
            return match["uid"].replace("_", "-"), "guaranteed"
        if levels[-1] in _QOS_LEVELS and len(levels) >= 2 and levels[-2] == _KUBEPODS:
            return match["uid"].replace("_", "-"), _qos(levels[-1])
        return None
    match = _CGROUPFS_POD_RE.fullmatch(segment)
    if match is None:
        return None
    # ".." (a path relative to the reader's cgroup namespace) may hide the kubepods and qos levels
    parent = segments[index - 1] if index >= 1 else ""
    grandparent = segments[index - 2] if index >= 2 else ""
    if parent == _KUBEPODS:
        return match["uid"], "guaranteed"
    if parent in _QOS_LEVELS and grandparent in (_KUBEPODS, ".."):
        return match["uid"], _qos(parent)
    if parent == "..":
        return match["uid"], None
    return None


def _qos(level: str) -> QosClass:
    return "burstable" if level == "burstable" else "besteffort"


def _pod_container(segments: list[str], index: int, pod_uid: str, qos: QosClass | None) -> ContainerRef | None:
    if index + 1 >= len(segments):
        return None  # in the pod level itself, not in a container
    child = segments[index + 1]
    if _is_conmon(child):
        return None
    found = _container_level(child, parent=segments[index])
    if found is None:
        return None  # a level that is no container
    return ContainerRef(found.runtime, found.container_id, pod_uid, qos)


def _is_conmon(segment: str) -> bool:
    match = _PREFIXED_ID_RE.fullmatch(segment)
    return match is not None and (match["prefix"] == _CONMON or match["prefix"].endswith("-" + _CONMON))


def _container_level(segment: str, *, parent: str) -> ContainerRef | None:
    """A ContainerRef (no pod) when ``segment`` names a container; None otherwise and for conmon."""
    if _BARE_ID_RE.fullmatch(segment):
        return ContainerRef("docker" if parent == "docker" else "unknown", segment)
    match = _PREFIXED_ID_RE.fullmatch(segment)
    if match is None or _is_conmon(segment):
        return None
    return ContainerRef(_RUNTIME_BY_PREFIX.get(match["prefix"], "unknown"), match["id"])


def _cgroup2_mount_points(lines: Iterable[str]) -> list[str]:
    """Mount points of cgroup2 file systems in /proc/<pid>/mountinfo lines, in file order."""
    points: list[str] = []
    for line in lines:
        # <id> <parent> <major:minor> <root> <mount point> <options> [<optional>...] - <fstype> <source> <super options>
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields = left.split()
        if len(fields) >= 5 and right.split()[:1] == ["cgroup2"]:
            points.append(_unescape_mountinfo(fields[4]))
    return points


def _unescape_mountinfo(field: str) -> str:
    # The kernel writes space, tab, newline and backslash in mount points as \040 \011 \012 \134.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), field)
