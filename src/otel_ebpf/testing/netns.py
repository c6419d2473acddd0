"""Network-namespace helpers for real-network kernel tests (root only).

Everything here is a context manager that undoes itself on exit, also when the
body raises: namespaces are deleted, processes inside them killed, iptables
chains removed, ``/etc/netns/NAME`` removed. Names carry the pid of the test
process (``oe-<pid>-<n>``), so parallel runs and leftovers of killed runs never
collide; :func:`cleanup_stale` removes the leftovers of dead runs.

Traffic targets are only ever loopback addresses or addresses inside the
namespaces made here (``10.231.0.0/16`` on veth pairs and namespace-local ``lo``).

Usage::

    import sys
    from otel_ebpf.testing.netns import (
        DnsServer, NetNamespace, blackhole, connect_pair, drop_random, tcp_info)

    with NetNamespace() as a, NetNamespace() as b:
        addr_a, addr_b = connect_pair(a, b)          # 10.231.N.1 <-> 10.231.N.2
        server = b.popen([sys.executable, "-m", "http.server", "-b", addr_b, "8000"])
        b.wait_listening(8000)
        a.run(["curl", "-s", f"http://{addr_b}:8000/"])

    with NetNamespace() as ns, DnsServer(ns, records={"found.test": "10.231.255.1"}):
        ns.python("import socket; print(socket.gethostbyname('found.test'))")

    with drop_random(port, 0.2) as drops:            # host lo, both directions
        ...                                          # transfer; drops.dropped() counts
        assert tcp_info(sock.getsockname(), sock.getpeername()).retrans > 0

    with NetNamespace() as ns, blackhole(ns, 9) as (addr, port):
        ns.python(f"import socket; socket.create_connection(('{addr}', {port}))")  # ETIMEDOUT ~3 s
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Self

__all__ = [
    "CommandError",
    "DnsAnswer",
    "DnsServer",
    "IptablesChain",
    "NetNamespace",
    "TcpInfo",
    "blackhole",
    "cleanup_stale",
    "connect_pair",
    "drop_random",
    "netns_unavailable_reason",
    "parse_ss",
    "tcp_info",
    "tcp_infos",
]

ETC_NETNS = Path("/etc/netns")
#: Address put on a namespace's ``lo`` by :func:`blackhole` when none is given.
BLACKHOLE_ADDRESS = "10.231.254.1"

_names = itertools.count(1)
_subnets = itertools.count(0)


class CommandError(subprocess.CalledProcessError):
    """A failed command; unlike CalledProcessError its message includes stderr."""

    def __str__(self) -> str:
        err = self.stderr or ""
        if isinstance(err, bytes):
            err = err.decode(errors="replace")
        return f"{' '.join(map(str, self.cmd))!s} exited {self.returncode}: {err.strip()}"


def _run(cmd: Sequence[str], *, check: bool = True, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    kw.setdefault("timeout", 60)
    proc = subprocess.run(list(cmd), check=False, **kw)
    if check and proc.returncode:
        raise CommandError(proc.returncode, proc.args, proc.stdout, proc.stderr)
    return proc


def netns_unavailable_reason() -> str | None:
    """Why namespace tests cannot run here (not root, ``ip``/``iptables``/``ss`` missing), or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "iptables", "ss"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


# --------------------------------------------------------------------------- namespaces


class NetNamespace:
    """A named network namespace (``ip netns add``) with ``lo`` up; deleted on exit.

    Commands run inside it through ``ip netns exec NAME``, which execs the command
    after setns (``popen(...).pid`` is the command's own pid) and bind-mounts every
    file of ``/etc/netns/NAME/`` over its ``/etc`` twin for that command only.

    Usage::

        with NetNamespace(prefix="oe") as ns:
            ns.sysctl("net.ipv4.tcp_syn_retries", "1")
            server = ns.popen([sys.executable, "-m", "http.server", "8000"])
            ns.wait_listening(8000)
            print(ns.run(["ss", "-tln"]).stdout)
    """

    def __init__(self, *, prefix: str = "oe", name: str | None = None):
        self.name = name or f"{prefix}-{os.getpid()}-{next(_names)}"
        self._procs: list[subprocess.Popen] = []
        self._created = False

    def __repr__(self) -> str:
        return f"NetNamespace({self.name!r})"

    def __enter__(self) -> Self:
        _run(["ip", "netns", "add", self.name])
        self._created = True
        try:
            _run(["ip", "-n", self.name, "link", "set", "lo", "up"])
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def exec_prefix(self) -> list[str]:
        """``["ip", "netns", "exec", NAME]``: prepend it to run a command inside."""
        return ["ip", "netns", "exec", self.name]

    @property
    def etc_dir(self) -> Path:
        """``/etc/netns/NAME``: its files shadow ``/etc`` for commands run via ``ip netns exec``."""
        return ETC_NETNS / self.name

    def run(self, cmd: Sequence[str], **kw) -> subprocess.CompletedProcess:
        """Run ``cmd`` inside; defaults ``capture_output=True, text=True, check=True, timeout=60``.

        A non-zero exit raises :class:`CommandError` (with stderr) unless ``check=False``.
        """
        return _run(self.exec_prefix + list(cmd), **kw)

    def popen(self, cmd: Sequence[str], **kw) -> subprocess.Popen:
        """Start ``cmd`` inside; it is terminated (then killed) when the namespace closes."""
        proc = subprocess.Popen(self.exec_prefix + list(cmd), **kw)
        self._procs.append(proc)
        return proc

    def python(self, code: str, *args: str, **kw) -> subprocess.CompletedProcess:
        """``run([sys.executable, "-c", code, *args], **kw)``."""
        return self.run([sys.executable, "-c", code, *map(str, args)], **kw)

    def sysctl(self, key: str, value: str | int | None = None) -> str:
        """Set ``key`` (``net.ipv4.tcp_syn_retries`` or a ``/proc/sys`` relative path) when
        ``value`` is given; return the current value. Only per-netns keys are namespaced."""
        path = "/proc/sys/" + (key if "/" in key else key.replace(".", "/"))
        if value is not None:
            self.run(["tee", path], input=f"{value}\n")
        return self.run(["cat", path]).stdout.strip()

    def add_address(self, cidr: str, *, dev: str = "lo") -> None:
        """``ip addr add CIDR dev DEV`` inside (e.g. a namespace-local /32 on ``lo``)."""
        _run(["ip", "-n", self.name, "addr", "add", cidr, "dev", dev])

    def pids(self) -> list[int]:
        """Pids of all processes whose network namespace is this one."""
        out = _run(["ip", "netns", "pids", self.name], check=False).stdout
        return [int(p) for p in out.split() if p.isdigit()]

    def wait_listening(self, port: int, *, host: str | None = None, timeout: float = 10.0) -> None:
        """Return once a TCP socket listens on ``port`` (and ``host``, if given) inside;
        TimeoutError after ``timeout``. Polls ``ss -tlnH`` so nothing connects to it."""
        deadline = time.monotonic() + timeout
        while True:
            out = self.run(["ss", "-tlnH"]).stdout
            for line in out.splitlines():
                fields = line.split()
                if len(fields) >= 4:
                    h, p = _split_endpoint(fields[3])
                    if p == port and (host is None or h == _norm_host(host)):
                        return
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listening on {host or '*'}:{port} in {self.name}")
            time.sleep(0.05)

    def close(self) -> None:
        """Kill what runs inside, remove ``/etc/netns/NAME``, delete the namespace. Idempotent."""
        try:
            while self._procs:
                _stop(self._procs.pop())
        finally:
            if self._created:
                try:
                    _kill_netns_pids(self.name)
                    _remove_etc_dir(self.name)
                finally:
                    proc = _run(["ip", "netns", "delete", self.name], check=False)
                    self._created = False
                    if proc.returncode and self.name in _netns_names():
                        raise CommandError(proc.returncode, proc.args, proc.stdout, proc.stderr)


def _stop(proc: subprocess.Popen, grace: float = 3.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            try:
                stream.close()
            except OSError:
                pass


def _kill_netns_pids(name: str) -> None:
    out = _run(["ip", "netns", "pids", name], check=False).stdout
    pids = [int(p) for p in out.split() if p.isdigit() and int(p) != os.getpid()]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 2.0
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if _alive(p)]
            time.sleep(0.02)
        if not pids:
            return


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _remove_etc_dir(name: str) -> None:
    shutil.rmtree(ETC_NETNS / name, ignore_errors=True)
    try:
        ETC_NETNS.rmdir()  # only when empty: another run's files keep it
    except OSError:
        pass


def _netns_names() -> list[str]:
    out = _run(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def cleanup_stale(*, prefix: str = "oe") -> list[str]:
    """Remove what runs that died without cleaning up left behind: namespaces named
    ``PREFIX-<pid>-<n>`` (with their ``/etc/netns`` dirs) and host iptables chains
    ``PREFIX-drop-<pid>-<n>`` / ``PREFIX-bh-<pid>-<n>`` whose pid is no longer alive.
    Returns the names removed."""
    removed: list[str] = []
    pattern = re.compile(rf"^{re.escape(prefix)}-(\d+)-\d+$")
    for name in _netns_names():
        m = pattern.match(name)
        if m and not _alive(int(m.group(1))):
            _kill_netns_pids(name)
            _remove_etc_dir(name)
            _run(["ip", "netns", "delete", name], check=False)
            removed.append(name)
    chain_re = re.compile(rf"^-N ({re.escape(prefix)}-(?:drop|bh)-(\d+)-\d+)$")
    for tool in ("iptables", "ip6tables"):
        if shutil.which(tool) is None:
            continue
        for line in _run([tool, "-w", "-S"], check=False).stdout.splitlines():
            m = chain_re.match(line.strip())
            if m and not _alive(int(m.group(2))):
                IptablesChain(m.group(1), tool=tool)._remove_all_references()
                removed.append(f"{tool}:{m.group(1)}")
    return removed


def connect_pair(a: NetNamespace, b: NetNamespace, *, subnet_index: int | None = None) -> tuple[str, str]:
    """Join ``a`` and ``b`` with a veth pair; return their addresses ``(addr_a, addr_b)``.

    The pair gets ``10.231.N.1/30`` (``oeNa`` in ``a``) and ``10.231.N.2/30``
    (``oeNb`` in ``b``), N = ``subnet_index`` or the next of a per-process counter
    (0..253; 254 and 255 are left for :data:`BLACKHOLE_ADDRESS` and fake DNS records).
    The veth is created directly inside the namespaces, so its names never touch
    the host's; it vanishes with either namespace. Returns once both ends are up.
    """
    idx = next(_subnets) % 254 if subnet_index is None else subnet_index
    if not 0 <= idx <= 253:
        raise ValueError("subnet_index must be in 0..253")
    if a.name == b.name:
        raise ValueError("connect_pair needs two different namespaces")
    dev_a, dev_b = f"oe{idx}a", f"oe{idx}b"
    addr_a, addr_b = f"10.231.{idx}.1", f"10.231.{idx}.2"
    _run(["ip", "-n", a.name, "link", "add", dev_a, "type", "veth", "peer", "name", dev_b, "netns", b.name])
    _run(["ip", "-n", a.name, "addr", "add", f"{addr_a}/30", "dev", dev_a])
    _run(["ip", "-n", b.name, "addr", "add", f"{addr_b}/30", "dev", dev_b])
    _run(["ip", "-n", a.name, "link", "set", dev_a, "up"])
    _run(["ip", "-n", b.name, "link", "set", dev_b, "up"])
    deadline = time.monotonic() + 5.0
    while True:
        up = all("LOWER_UP" in _run(["ip", "-n", ns.name, "link", "show", dev]).stdout
                 for ns, dev in ((a, dev_a), (b, dev_b)))
        if up:
            return addr_a, addr_b
        if time.monotonic() > deadline:
            raise TimeoutError(f"veth {dev_a}/{dev_b} did not come up")
        time.sleep(0.02)


# --------------------------------------------------------------------------- iptables


class IptablesChain:
    """A dedicated iptables chain plus the jump rules into it; all removed by :meth:`remove`.

    A chain of our own makes cleanup exact (``-D`` of the jump, ``-F``, ``-X``) and the
    drop count readable (:meth:`dropped`). ``tool`` is ``iptables`` or ``ip6tables``;
    ``netns=None`` means the host's tables.
    """

    def __init__(self, name: str, *, tool: str = "iptables", netns: NetNamespace | None = None):
        if len(name) > 28:
            raise ValueError(f"iptables chain name {name!r} is longer than 28 characters")
        self.name = name
        self.tool = tool
        self.netns = netns
        self._jumps: list[list[str]] = []

    def _ipt(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [self.tool, "-w", "5", *args]
        if self.netns is not None:
            return self.netns.run(cmd, check=check)
        return _run(cmd, check=check)

    def create(self, rules: Iterable[Sequence[str]], *, hooks: Iterable[Sequence[str]]) -> Self:
        """``-N`` the chain, ``-A`` each rule to it, then ``-I`` each hook (e.g.
        ``["INPUT", "-i", "lo"]``) as a jump at the top of its builtin chain."""
        self._ipt("-N", self.name)
        try:
            for rule in rules:
                self._ipt("-A", self.name, *rule)
            for hook in hooks:
                builtin, *match = hook
                self._ipt("-I", builtin, "1", *match, "-j", self.name)
                self._jumps.append([builtin, *match, "-j", self.name])
        except BaseException:
            self.remove()
            raise
        return self

    def dropped(self) -> int:
        """Packets the chain's rules have matched so far."""
        out = self._ipt("-L", self.name, "-n", "-v", "-x").stdout.splitlines()[2:]
        return sum(int(line.split()[0]) for line in out if line.strip())

    def remove(self) -> None:
        """Delete the jumps, flush and delete the chain; raises if it is still there."""
        for jump in self._jumps:
            self._ipt("-D", *jump, check=False)
        self._jumps.clear()
        self._remove_all_references()

    def _remove_all_references(self) -> None:
        # Jumps this object did not record (stale chains of dead runs) are found via -S.
        for line in self._ipt("-S", check=False).stdout.splitlines():
            parts = line.split()
            if len(parts) > 2 and parts[0] == "-A" and parts[-2:] == ["-j", self.name]:
                self._ipt("-D", *parts[1:], check=False)
        self._ipt("-F", self.name, check=False)
        proc = self._ipt("-X", self.name, check=False)
        if proc.returncode and f"-N {self.name}" in self._ipt("-S", check=False).stdout.split("\n"):
            raise CommandError(proc.returncode, proc.args, proc.stdout, proc.stderr)


def _chain_name(kind: str) -> str:
    return f"oe-{kind}-{os.getpid()}-{next(_names)}"


@contextmanager
def drop_random(port: int, probability: float, *, netns: NetNamespace | None = None,
                interface: str | None = "lo", ipv6: bool = False) -> Iterator[IptablesChain]:
    """Drop a random ``probability`` share of TCP packets to or from ``port``.

    Adds a chain with ``-p tcp --dport PORT -m statistic --mode random
    --probability P -j DROP`` and the same for ``--sport``, jumped to from ``INPUT``
    (``-i INTERFACE`` unless ``interface=None``), in ``netns`` or on the host. On
    ``lo`` every packet passes INPUT once, so both directions lose (data and ACKs);
    on another interface only packets arriving there are dropped. ``ipv6=True``
    also installs the ip6tables twin. Yields the (IPv4) chain: ``.dropped()``
    counts drops. Everything is removed on exit.

    Usage::

        with drop_random(port, 0.2) as drops:
            sock.sendall(payload)
            assert tcp_info(sock.getsockname(), sock.getpeername()).retrans > 0
    """
    if not 0.0 < probability <= 1.0:
        raise ValueError("probability must be in (0, 1]")
    rules = [["-p", "tcp", direction, str(port), "-m", "statistic", "--mode", "random",
              "--probability", f"{probability:.6f}", "-j", "DROP"] for direction in ("--dport", "--sport")]
    hook = ["INPUT", "-i", interface] if interface else ["INPUT"]
    chains: list[IptablesChain] = []
    try:
        for tool in ("iptables", "ip6tables") if ipv6 else ("iptables",):
            chain = IptablesChain(_chain_name("drop"), tool=tool, netns=netns)
            chains.append(chain.create(rules, hooks=[hook]))
        yield chains[0]
    finally:
        _remove_chains(chains)


@contextmanager
def blackhole(netns: NetNamespace, port: int, *, address: str | None = None,
              syn_retries: int | None = 1) -> Iterator[tuple[str, int]]:
    """Make ``connect()`` to ``address:port`` from inside ``netns`` time out (ETIMEDOUT).

    SYNs to that address and port are dropped on ``INPUT`` inside ``netns`` (the SYN
    is really sent, nothing answers); other ports of the address still refuse at
    once. ``address=None`` puts :data:`BLACKHOLE_ADDRESS` as a /32 on the namespace's
    ``lo`` (removed on exit). ``syn_retries`` sets the namespace's
    ``net.ipv4.tcp_syn_retries`` (restored on exit): with 1, connect fails after
    about 1 + 2 = 3 s; the kernel default 6 takes about 127 s. Yields ``(address, port)``.

    To black-hole a server in another namespace ``b`` for a client in ``a``, call
    ``blackhole(b, port, address=addr_b, syn_retries=None)`` and
    ``a.sysctl("net.ipv4.tcp_syn_retries", 1)``.

    Usage::

        with NetNamespace() as ns, blackhole(ns, 9) as (addr, port):
            ns.python(f"import socket; socket.socket().connect(('{addr}', {port}))", check=False)
    """
    added_address = address is None
    address = address or BLACKHOLE_ADDRESS
    v6 = ipaddress.ip_address(address).version == 6
    chain = IptablesChain(_chain_name("bh"), tool="ip6tables" if v6 else "iptables", netns=netns)
    old_retries = None
    created: list[IptablesChain] = []
    try:
        if added_address:
            netns.add_address(f"{address}/32")
        chain.create([["-p", "tcp", "--syn", "-d", address, "--dport", str(port), "-j", "DROP"]],
                     hooks=[["INPUT"]])
        created.append(chain)
        if syn_retries is not None:
            old_retries = netns.sysctl("net.ipv4.tcp_syn_retries")
            netns.sysctl("net.ipv4.tcp_syn_retries", syn_retries)
        yield address, port
    finally:
        try:
            if old_retries is not None:
                netns.sysctl("net.ipv4.tcp_syn_retries", old_retries)
            if added_address:
                _run(["ip", "-n", netns.name, "addr", "del", f"{address}/32", "dev", "lo"], check=False)
        finally:
            _remove_chains(created)


def _remove_chains(chains: list[IptablesChain]) -> None:
    errors: list[BaseException] = []
    for chain in chains:
        try:
            chain.remove()
        except Exception as e:  # noqa: BLE001 -- keep removing the others, raise the first
            errors.append(e)
    if errors:
        raise errors[0]


# --------------------------------------------------------------------------- DNS


@dataclass(frozen=True)
class DnsAnswer:
    """One ``dig`` reply: ``rcode`` (``NOERROR``, ``NXDOMAIN``, ``REFUSED``, ...) and answer data."""

    rcode: str
    answers: list[str]


class DnsServer:
    """``dnsmasq`` inside ``netns`` on ``listen:port`` (127.0.0.1:53), and the namespace's
    ``/etc/resolv.conf`` pointing at it.

    ``records`` maps exact names to one or more addresses (``--host-record``: A for
    IPv4, AAAA for IPv6; asking for the other type gets NOERROR with no answer, and
    subdomains are not matched). ``wildcards`` maps domains to addresses
    (``--address=/domain/addr``: the domain and all its subdomains). Every name under
    ``nxdomain`` (``--local=/d/``; ``"#"`` = every name, the default) that no record
    covers answers NXDOMAIN, which glibc turns into ``socket.gaierror`` EAI_NONAME.
    With ``nxdomain=()``, dnsmasq (``--no-resolv``, no upstream) answers REFUSED
    instead, which glibc reports as EAI_AGAIN ("Temporary failure in name resolution").

    ``resolv_conf=True`` writes ``/etc/netns/NAME/resolv.conf`` (``nameserver LISTEN``);
    ``ip netns exec`` bind-mounts it over ``/etc/resolv.conf`` for commands started
    from then on (not for ones already running, nor for processes that enter the
    namespace by other means). glibc has no port in resolv.conf, so it needs port 53.
    Queries are logged to ``log_path`` (default: a temporary file, removed on exit).

    Usage::

        with NetNamespace() as ns, DnsServer(ns, records={"found.test": "10.231.255.1"}) as dns:
            assert dns.query("nothere.test").rcode == "NXDOMAIN"
            ns.python("import socket; print(socket.getaddrinfo('found.test', 80))")
    """

    def __init__(self, netns: NetNamespace, *, records: Mapping[str, str | Sequence[str]] | None = None,
                 wildcards: Mapping[str, str | Sequence[str]] | None = None,
                 nxdomain: Sequence[str] = ("#",), listen: str = "127.0.0.1", port: int = 53,
                 resolv_conf: bool = True, resolv_options: str = "timeout:1 attempts:2",
                 log_path: str | Path | None = None, extra_args: Sequence[str] = (),
                 ready_timeout: float = 10.0):
        if resolv_conf and port != 53:
            raise ValueError("resolv.conf cannot name a port: use port=53 or resolv_conf=False")
        self.netns = netns
        self.records = {k: _as_list(v) for k, v in (records or {}).items()}
        self.wildcards = {k: _as_list(v) for k, v in (wildcards or {}).items()}
        self.nxdomain = tuple(nxdomain)
        self.listen = listen
        self.port = port
        self.resolv_conf = resolv_conf
        self.resolv_options = resolv_options
        self.extra_args = list(extra_args)
        self.ready_timeout = ready_timeout
        self._own_log = log_path is None
        self.log_path: Path | None = None if log_path is None else Path(log_path)
        self.proc: subprocess.Popen | None = None
        self._tmp: Path | None = None
        self._wrote_resolv = False

    def command(self) -> list[str]:
        """The dnsmasq command line (valid after the paths are chosen in ``__enter__``)."""
        assert self._tmp is not None and self.log_path is not None
        cmd = [_dnsmasq(), "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
               "--no-poll", "--bind-interfaces", f"--listen-address={self.listen}", f"--port={self.port}",
               "--log-queries", f"--log-facility={self.log_path}", f"--pid-file={self._tmp / 'dnsmasq.pid'}"]
        for name, addrs in self.records.items():
            cmd.append(f"--host-record={name},{','.join(addrs)}")
        for domain, addrs in self.wildcards.items():
            cmd.extend(f"--address=/{domain}/{addr}" for addr in addrs)
        cmd.extend(f"--local=/{domain}/" for domain in self.nxdomain)
        return cmd + self.extra_args

    def __enter__(self) -> Self:
        self._tmp = Path(tempfile.mkdtemp(prefix=f"dnsmasq-{self.netns.name}-"))
        if self.log_path is None:
            self.log_path = self._tmp / "dnsmasq.log"
        try:
            with open(self._tmp / "stderr", "wb") as stderr:
                self.proc = self.netns.popen(self.command(), stdin=subprocess.DEVNULL,
                                             stdout=subprocess.DEVNULL, stderr=stderr)
            self._wait_ready()
            if self.resolv_conf:
                self.netns.etc_dir.mkdir(parents=True, exist_ok=True)
                self._wrote_resolv = True
                (self.netns.etc_dir / "resolv.conf").write_text(
                    f"nameserver {self.listen}\n" + (f"options {self.resolv_options}\n" if self.resolv_options else ""))
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while True:
            assert self.proc is not None and self._tmp is not None
            if self.proc.poll() is not None:
                err = (self._tmp / "stderr").read_text(errors="replace").strip()
                raise RuntimeError(f"dnsmasq exited {self.proc.returncode}: {err}")
            # dig exits 0 on any reply, NXDOMAIN and REFUSED included; 9 when nothing answers.
            if self._dig("ready.probe.", "A", check=False).returncode == 0:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"dnsmasq in {self.netns.name} did not answer on {self.listen}:{self.port}")
            time.sleep(0.05)

    def _dig(self, name: str, rdtype: str, *, check: bool = True) -> subprocess.CompletedProcess:
        if shutil.which("dig") is None:
            raise FileNotFoundError("dig is not installed (make setup installs bind9-dnsutils)")
        return self.netns.run(["dig", f"@{self.listen}", "-p", str(self.port), "+time=1", "+tries=1",
                               "+noall", "+comments", "+answer", name, rdtype], check=check)

    def query(self, name: str, rdtype: str = "A") -> DnsAnswer:
        """Ask the server with ``dig`` from inside the namespace."""
        out = self._dig(name, rdtype).stdout
        m = re.search(r"status: ([A-Z]+)", out)
        if not m:
            raise RuntimeError(f"no reply header in dig output: {out!r}")
        answers = [line.split()[-1] for line in out.splitlines()
                   if line.strip() and not line.startswith(";") and len(line.split()) >= 5]
        return DnsAnswer(m.group(1), answers)

    def log_text(self) -> str:
        """The query log so far."""
        assert self.log_path is not None
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def close(self) -> None:
        """Stop dnsmasq, remove the resolv.conf it had and its temporary files. Idempotent."""
        try:
            if self.proc is not None:
                _stop(self.proc)
                self.proc = None
        finally:
            if self._wrote_resolv:
                try:
                    (self.netns.etc_dir / "resolv.conf").unlink()
                except FileNotFoundError:
                    pass
                try:
                    self.netns.etc_dir.rmdir()
                    ETC_NETNS.rmdir()
                except OSError:
                    pass
                self._wrote_resolv = False
            if self._tmp is not None:  # holds the pid file, stderr and the default log
                shutil.rmtree(self._tmp, ignore_errors=True)
                self._tmp = None
                if self._own_log:
                    self.log_path = None


def _as_list(v: str | Sequence[str]) -> list[str]:
    return [v] if isinstance(v, str) else list(v)


def _dnsmasq() -> str:
    path = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
    if not Path(path).exists():
        raise FileNotFoundError("dnsmasq is not installed (make setup installs dnsmasq-base)")
    return path


# --------------------------------------------------------------------------- ss / tcp_info


@dataclass(frozen=True)
class TcpInfo:
    """One TCP connection as ``ss -tin`` reports it (kernel ``struct tcp_info``).

    Counters ss leaves out when zero read 0; times ss leaves out read None.
    ``retrans`` is the lifetime total of retransmitted segments (ss ``retrans:cur/total``),
    ``retrans_current`` the ones not yet acknowledged. ``bytes_acked`` counts the SYN too.
    """

    state: str
    local: tuple[str, int]
    remote: tuple[str, int]
    recv_q: int = 0
    send_q: int = 0
    retrans: int = 0
    retrans_current: int = 0
    bytes_sent: int = 0
    bytes_acked: int = 0
    bytes_received: int = 0
    bytes_retrans: int = 0
    segs_out: int = 0
    segs_in: int = 0
    data_segs_out: int = 0
    data_segs_in: int = 0
    lost: int = 0
    unacked: int = 0
    cwnd: int | None = None
    rto_ms: float | None = None
    rtt_ms: float | None = None
    rttvar_ms: float | None = None
    minrtt_ms: float | None = None
    raw: str = ""


_INT_FIELDS = ("bytes_sent", "bytes_acked", "bytes_received", "bytes_retrans", "segs_out", "segs_in",
               "data_segs_out", "data_segs_in", "lost", "unacked", "cwnd")


def _field(info: str, key: str) -> str | None:
    m = re.search(rf"(?<![\w]){key}:(\S+)", info)
    return m.group(1) if m else None


def _norm_host(host: str) -> str:
    host = host.split("%", 1)[0].strip("[]")  # ss prints [fe80::1]%eth0:22 and 127.0.0.1%lo:80
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def _split_endpoint(text: str) -> tuple[str, int]:
    """``127.0.0.1:80``, ``[::1]:80``, ``127.0.0.1%lo:80``, ``[fe80::1]%eth0:80``, ``*:80``."""
    host, _, port = text.rpartition(":")
    return _norm_host(host), int(port) if port.isdigit() else 0


def parse_ss(text: str) -> list[TcpInfo]:
    """Parse ``ss -tin`` output (with or without ``-H`` header, ``-O`` one-line or the
    default info-on-a-continuation-line form)."""
    entries: list[list[str]] = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("State"):
            continue
        if line[0].isspace() and entries:
            entries[-1].append(line.strip())
        else:
            entries.append([line.strip()])
    result = []
    for parts in entries:
        fields = parts[0].split()
        if len(fields) < 5:
            continue
        info = " ".join(fields[5:] + parts[1:])
        values: dict = {name: int(v) for name in _INT_FIELDS if (v := _field(info, name)) is not None}
        if (v := _field(info, "retrans")) and "/" in v:
            cur, total = v.split("/", 1)
            values["retrans_current"], values["retrans"] = int(cur), int(total)
        if (v := _field(info, "rtt")) is not None:
            rtt, _, var = v.partition("/")
            values["rtt_ms"], values["rttvar_ms"] = float(rtt), float(var) if var else None
        if (v := _field(info, "minrtt")) is not None:
            values["minrtt_ms"] = float(v)
        if (v := _field(info, "rto")) is not None:
            values["rto_ms"] = float(v)
        result.append(TcpInfo(state=fields[0], recv_q=int(fields[1]), send_q=int(fields[2]),
                              local=_split_endpoint(fields[3]), remote=_split_endpoint(fields[4]),
                              raw=info, **values))
    return result


def tcp_infos(*, netns: NetNamespace | None = None) -> list[TcpInfo]:
    """Every non-listening TCP connection (``ss -tinH``) on the host or in ``netns``."""
    cmd = ["ss", "-tinH"]
    out = (netns.run(cmd) if netns is not None else _run(cmd)).stdout
    return parse_ss(out)


Endpoint = tuple | int


def _matches(actual: tuple[str, int], wanted: Endpoint | None) -> bool:
    if wanted is None:
        return True
    if isinstance(wanted, int):
        return actual[1] == wanted
    host, port = wanted[0], int(wanted[1])
    return actual[1] == port and (host in ("", "*") or actual[0] == _norm_host(host))


def tcp_info(local: Endpoint | None = None, remote: Endpoint | None = None, *,
             netns: NetNamespace | None = None) -> TcpInfo:
    """The one connection whose local and remote endpoints match; each endpoint is a
    ``(host, port[, ...])`` tuple as ``getsockname()``/``getpeername()`` return it, or a
    bare port. IPv4-mapped IPv6 forms match their IPv4 address. LookupError when none
    matches, ValueError when several do. Read it while the connection is open: a
    closed socket keeps no counters (TIME-WAIT shows none).

    Usage::

        info = tcp_info(sock.getsockname(), sock.getpeername())
        assert info.bytes_acked >= n and info.retrans == 0
    """
    if local is None and remote is None:
        raise ValueError("give local, remote or both")
    found = [i for i in tcp_infos(netns=netns) if _matches(i.local, local) and _matches(i.remote, remote)]
    if not found:
        where = f" in {netns.name}" if netns else ""
        raise LookupError(f"no TCP connection local={local} remote={remote}{where}")
    if len(found) > 1:
        raise ValueError(f"{len(found)} TCP connections match local={local} remote={remote}: "
                         + ", ".join(f"{i.local}->{i.remote}" for i in found))
    return found[0]
