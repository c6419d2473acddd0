"""Who a process is: executable, redacted command line, service name, its own OTEL_* settings.

Usage::

    from otel_ebpf.processinfo import ProcessInfoCache

    cache = ProcessInfoCache()             # proc_root="/proc", max_entries=4096, ttl_s=60
    info = cache.get(pid)
    info.service_name                      # "orders" (OTEL_SERVICE_NAME), "app" (python3 app.py), "nginx"
    info.command_line                      # "python3 app.py --db-password REDACTED"
    info.otel_resource_attributes          # {"deployment.environment.name": "prod"} from its environment

Reads ``/proc/<pid>/cmdline``, ``comm``, ``exe`` (symlink) and ``environ`` (the latter needs
root or the same user; without it the environment-based rules simply do not apply).

``service_name`` is decided in this order:

1. ``OTEL_SERVICE_NAME`` in the process's environment;
2. ``service.name`` in the process's ``OTEL_RESOURCE_ATTRIBUTES``;
3. for interpreters, the program they run: ``python3 app.py`` → ``app``, ``python3 -m
   http.server`` → ``http.server``, ``python3 /x/y/serve.py`` → ``serve``, ``node
   dist/server.js`` → ``server``, ``java -jar orders-1.2.jar`` → ``orders``, ``java -cp lib
   com.acme.Main`` → ``com.acme.Main``, ``ruby app.rb``/``perl x.pl``/``php index.php`` →
   stem. Interpreters are recognised by executable name (python*, pypy*, node, nodejs, deno,
   bun, ruby, perl, php, java). Without a program (``python3 -c ...``, a REPL) rule 4 applies;
4. the executable name (the base name of ``/proc/<pid>/exe``, else of ``argv[0]``, else
   ``comm``).

``command_line`` is argv joined by spaces with secrets replaced by ``REDACTED``: the value of
flags whose name looks secret (``--password x``, ``--api-key=x``, ``--db-token x``),
``KEY=VALUE`` arguments whose key looks secret (``DB_PASSWORD=x``), user information and
secret query values in URLs (``postgres://REDACTED:REDACTED@db/x``). "Looks secret" is the
redaction processor's default query-key rule. Attached short options (``mysql -pSECRET``) are
not recognised. It is cut at 4096 characters.

A process that is gone (or unreadable) still gets an info: executable ``unknown``, service
``unknown_service``, ``alive=False``; it is cached like the others. The cache is an LRU of
``max_entries`` (evictions counted in ``evictions``) whose entries are re-read after
``ttl_s`` (pids are reused, processes exec); a re-read that finds the same facts returns the
previous object, so callers can cache per object identity. Thread-safe.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import unquote

from otel_ebpf.processors.redaction import REDACTED, SecretKeyMatcher

__all__ = [
    "UNKNOWN_EXECUTABLE",
    "UNKNOWN_SERVICE",
    "ProcessInfo",
    "ProcessInfoCache",
    "infer_service_name",
    "parse_resource_attributes",
    "redact_command_line",
]

UNKNOWN_EXECUTABLE = "unknown"
UNKNOWN_SERVICE = "unknown_service"
_MAX_COMMAND_LINE = 4096
_MAX_READ = 1 << 20  # environ / cmdline larger than 1 MiB are cut
_OTEL_SERVICE_NAME = "OTEL_SERVICE_NAME"
_OTEL_RESOURCE_ATTRIBUTES = "OTEL_RESOURCE_ATTRIBUTES"
_SERVICE_NAME_KEY = "service.name"  # the resource attribute inside OTEL_RESOURCE_ATTRIBUTES

_JAR_VERSION_RE = re.compile(r"-\d+(\.\d+)*([-.][A-Za-z0-9]+)*$")
_PYTHON_RE = re.compile(r"^(python|pypy)(\d+(\.\d+)*)?[a-z]?$")
_NODE_NAMES = frozenset(("node", "nodejs"))
_SUBCOMMAND_RUNTIMES = frozenset(("deno", "bun"))
_SCRIPT_EXTENSIONS = (".py", ".pyc", ".pyz", ".js", ".mjs", ".cjs", ".ts", ".mts", ".rb", ".pl", ".php", ".jar")

# options that take the next argument as their value, per interpreter family
_PYTHON_VALUE_OPTS = frozenset(("-W", "-X", "--check-hash-based-pycs"))
_NODE_VALUE_OPTS = frozenset(
    ("-r", "--require", "--import", "--loader", "--experimental-loader", "-C", "--conditions", "--title")
)
_NODE_NO_SCRIPT = frozenset(("-e", "--eval", "-p", "--print", "-i", "--interactive", "-v", "--version"))
_RUBY_VALUE_OPTS = frozenset(("-r", "-I", "-C", "-E", "--encoding"))
_PERL_VALUE_OPTS = frozenset(("-I", "-M", "-m"))
_PHP_VALUE_OPTS = frozenset(("-c", "-d", "-t", "-z"))
_JAVA_VALUE_OPTS = frozenset(
    (
        "-cp",
        "-classpath",
        "--class-path",
        "-p",
        "--module-path",
        "--upgrade-module-path",
        "--add-modules",
        "--add-opens",
        "--add-exports",
        "--add-reads",
        "--patch-module",
        "--limit-modules",
        "--enable-native-access",
    )
)

_default_matcher = SecretKeyMatcher()


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    """Identity of one process. Not hashable (holds a dict)."""

    pid: int
    executable_name: str
    command_line: str
    service_name: str
    otel_resource_attributes: dict[str, str] = field(default_factory=dict)
    executable_path: str | None = None
    alive: bool = True
    service_name_set: bool = False  # the process set it (OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES)


def parse_resource_attributes(value: str | None) -> dict[str, str]:
    """Parse ``OTEL_RESOURCE_ATTRIBUTES`` (``k1=v1,k2=v2``, values percent-decoded).
    Members without ``=`` or with an empty key are skipped; later duplicates win."""
    out: dict[str, str] = {}
    if not value:
        return out
    for member in value.split(","):
        key, eq, val = member.partition("=")
        key = key.strip()
        if not eq or not key:
            continue
        out[key] = unquote(val.strip(), errors="replace")
    return out


def _stem(path: str) -> str:
    base = path.rstrip("/").rsplit("/", 1)[-1]
    lower = base.lower()
    for ext in _SCRIPT_EXTENSIONS:
        if lower.endswith(ext) and len(base) > len(ext):
            return base[: -len(ext)]
    return base


def _python_program(args: list[str]) -> str | None:
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            return _stem(args[i + 1]) if i + 1 < len(args) else None
        if a == "-":
            return None
        if a.startswith("--"):
            i += 2 if a in _PYTHON_VALUE_OPTS else 1
            continue
        if a.startswith("-") and len(a) > 1:
            # clustered short options: -Bu, -Wignore, -mhttp.server, -c'code'
            for j in range(1, len(a)):
                ch = a[j]
                if ch == "c":
                    return None
                if ch == "m":
                    mod = a[j + 1 :] or (args[i + 1] if i + 1 < len(args) else "")
                    return mod or None
                if ch in "WX":
                    if j + 1 == len(a):
                        i += 1  # value is the next argument
                    break
            i += 1
            continue
        return _stem(a)
    return None


def _generic_program(
    args: list[str], value_opts: frozenset[str], no_script: frozenset[str] = frozenset()
) -> str | None:
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            return _stem(args[i + 1]) if i + 1 < len(args) else None
        if a in no_script:
            return None
        if a.startswith("-") and len(a) > 1:
            i += 2 if a in value_opts else 1
            continue
        return _stem(a) if a != "-" else None
    return None


def _java_program(args: list[str]) -> str | None:
    i = 0
    while i < len(args):
        a = args[i]
        if a == "-jar":
            if i + 1 >= len(args):
                return None
            stem = _stem(args[i + 1])
            return _JAR_VERSION_RE.sub("", stem) or stem  # orders-1.2.3-SNAPSHOT.jar -> orders
        if a in ("-m", "--module"):
            if i + 1 >= len(args):
                return None
            module = args[i + 1]
            return module.rsplit("/", 1)[-1] if "/" in module else module
        if a.startswith("--module="):
            module = a.split("=", 1)[1]
            return module.rsplit("/", 1)[-1] if "/" in module else module
        if a.startswith("-"):
            i += 2 if a in _JAVA_VALUE_OPTS else 1
            continue
        return a
    return None


def infer_service_name(executable_name: str, argv: list[str]) -> str:
    """Service name from an executable and its argv (rules 3 and 4 of the module docstring)."""
    names = [executable_name]
    if argv and argv[0].rsplit("/", 1)[-1] != executable_name:
        names.append(argv[0].rsplit("/", 1)[-1])
    args = argv[1:]
    program = None
    for name in names:
        if _PYTHON_RE.match(name):
            program = _python_program(args)
        elif name in _NODE_NAMES:
            program = _generic_program(args, _NODE_VALUE_OPTS, _NODE_NO_SCRIPT)
        elif name in _SUBCOMMAND_RUNTIMES:
            rest = args[1:] if args and args[0] == "run" else args
            program = _generic_program(rest, frozenset())
        elif name == "ruby" or name.startswith("ruby"):
            program = _generic_program(args, _RUBY_VALUE_OPTS, frozenset(("-e",)))
        elif name == "perl" or re.match(r"^perl[\d.]+$", name):
            program = _generic_program(args, _PERL_VALUE_OPTS, frozenset(("-e", "-E")))
        elif name == "php" or re.match(r"^php[\d.]+$", name):
            if "-f" in args:
                k = args.index("-f")
                program = _stem(args[k + 1]) if k + 1 < len(args) else None
            elif "-S" in args or "-r" in args:
                program = None
            else:
                program = _generic_program(args, _PHP_VALUE_OPTS)
        elif name == "java":
            program = _java_program(args)
        else:
            continue
        break
    if program:
        return program
    return executable_name or UNKNOWN_SERVICE


def redact_command_line(argv: list[str], *, matcher: SecretKeyMatcher | None = None) -> str:
    """argv joined by spaces with secret values replaced (see the module docstring)."""
    matcher = matcher or _default_matcher
    out: list[str] = []
    redact_next = False
    for arg in argv:
        if redact_next:
            redact_next = False
            if not arg.startswith("-"):
                out.append(REDACTED)
                continue
        if arg.startswith("-") and len(arg) > 1:
            name, eq, value = arg.partition("=")
            flag = name.lstrip("-")
            if flag and matcher(flag):
                if eq:
                    out.append(f"{name}={REDACTED}")
                else:
                    out.append(arg)
                    redact_next = True
                continue
            if eq and ("://" in value or "?" in value):
                arg = f"{name}={matcher.redact_url(value)}"
            out.append(arg)
            continue
        if "://" in arg:
            out.append(matcher.redact_url(arg))
            continue
        key, eq, _ = arg.partition("=")
        if eq and key and " " not in key and "/" not in key and matcher(key):
            out.append(f"{key}={REDACTED}")
            continue
        out.append(arg)
    line = " ".join(out)
    if len(line) > _MAX_COMMAND_LINE:
        line = line[: _MAX_COMMAND_LINE - 3] + "..."
    return line


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read(_MAX_READ)
    except OSError:
        return None


def _split_nul(data: bytes) -> list[str]:
    if data.endswith(b"\0"):
        data = data[:-1]
    return [part.decode("utf-8", "replace") for part in data.split(b"\0")] if data else []


class ProcessInfoCache:
    """Bounded, thread-safe LRU of :class:`ProcessInfo` by pid (see the module docstring)."""

    def __init__(
        self,
        *,
        proc_root: str = "/proc",
        max_entries: int = 4096,
        ttl_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be positive")
        self._proc_root = proc_root.rstrip("/") or "/"
        self._max_entries = max_entries
        self._ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[int, tuple[ProcessInfo, float]] = OrderedDict()
        self.evictions = 0
        self.reads = 0
        self.hits = 0

    def __len__(self) -> int:
        return len(self._entries)

    def stats(self) -> dict[str, int]:
        return {"entries": len(self._entries), "evictions": self.evictions, "reads": self.reads, "hits": self.hits}

    def forget(self, pid: int) -> None:
        """Drop a pid (e.g. when the process exited)."""
        with self._lock:
            self._entries.pop(pid, None)

    def remember(self, pid: int, comm: str = "") -> ProcessInfo:
        """Read ``pid`` now, while it lives (cached like :meth:`get`).

        ``comm`` is the kernel's task name seen with the pid: when the process has
        already exited it still names the executable and the service (a curl that
        made one request and left before /proc could be read).
        """
        info = self.get(pid)
        if not info.alive and comm:
            info = ProcessInfo(pid=pid, executable_name=comm, command_line=f"[{comm}]", service_name=comm,
                               alive=False)
            with self._lock:
                self._entries[pid] = (info, self._clock())
        return info

    def get(self, pid: int) -> ProcessInfo:
        now = self._clock()
        # A hit takes no lock: the read and the reordering are one C call each, atomic under the
        # GIL (the entry may be evicted in between by another thread: then it simply stays out).
        # Called several times per exchange, from the receiver and pipeline threads.
        entry = self._entries.get(pid)
        if entry is not None and now - entry[1] < self._ttl_s:
            try:
                self._entries.move_to_end(pid)
            except KeyError:
                pass
            self.hits += 1
            return entry[0]
        info = self._read_process(pid)
        with self._lock:
            self.reads += 1
            old = self._entries.get(pid)
            if old is not None and old[0] == info:
                info = old[0]
            self._entries[pid] = (info, now)
            self._entries.move_to_end(pid)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)
                self.evictions += 1
        return info

    def _read_process(self, pid: int) -> ProcessInfo:
        base = f"{self._proc_root}/{int(pid)}"
        cmdline = _read(f"{base}/cmdline")
        comm_raw = _read(f"{base}/comm")
        try:
            exe_path: str | None = os.readlink(f"{base}/exe")
        except OSError:
            exe_path = None
        if cmdline is None and comm_raw is None and exe_path is None:
            return ProcessInfo(
                pid=pid,
                executable_name=UNKNOWN_EXECUTABLE,
                command_line="",
                service_name=UNKNOWN_SERVICE,
                alive=False,
            )
        argv = _split_nul(cmdline or b"")
        if len(argv) == 1 and " " in argv[0] and cmdline is not None and b"\0" not in cmdline.rstrip(b"\0"):
            argv = argv[0].split()  # a rewritten process title (setproctitle) is one string
        comm = comm_raw.decode("utf-8", "replace").strip() if comm_raw else ""
        if exe_path and exe_path.endswith(" (deleted)"):
            exe_path = exe_path[: -len(" (deleted)")]
        if exe_path:
            executable_name = exe_path.rsplit("/", 1)[-1]
        elif argv and argv[0].rstrip(":"):
            executable_name = argv[0].rstrip(":").rsplit("/", 1)[-1]
        else:
            executable_name = comm or UNKNOWN_EXECUTABLE
        env = self._read_environ(base)
        resource_attrs = parse_resource_attributes(env.get(_OTEL_RESOURCE_ATTRIBUTES))
        service_name = (env.get(_OTEL_SERVICE_NAME) or "").strip() or resource_attrs.get(_SERVICE_NAME_KEY) or ""
        service_name_set = bool(service_name)
        if not service_name:
            service_name = infer_service_name(executable_name, argv) if argv else (comm or executable_name)
        return ProcessInfo(
            pid=pid,
            executable_name=executable_name,
            command_line=redact_command_line(argv) if argv else (f"[{comm}]" if comm else ""),
            service_name=service_name,
            otel_resource_attributes=resource_attrs,
            executable_path=exe_path,
            service_name_set=service_name_set,
        )

    @staticmethod
    def _read_environ(base: str) -> dict[str, str]:
        data = _read(f"{base}/environ")
        if not data:
            return {}
        env = {}
        for item in data.split(b"\0"):
            if item.startswith(b"OTEL_SERVICE_NAME=") or item.startswith(b"OTEL_RESOURCE_ATTRIBUTES="):
                key, _, value = item.decode("utf-8", "replace").partition("=")
                env[key] = value
        return env
