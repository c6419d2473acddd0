"""Connection table: routes decoded kernel events to per-connection protocol sessions.

Usage::

    table = ConnectionTable(clock=MonotonicClock(), stats=Http1Stats())
    for event in tracer.poll():
        for exchange in table.handle(event):
            consumer.consume(exchange)
    table.expire(now_mono_ns)          # idle connections out, bounded size

One entry per (process, fd); the kernel's socket address tells a reused fd from
the old one. A connection first seen through its accept/connect starts parsing at
its first byte; one first seen through data (it was open before the agent
started) is parsed "midstream": from its next request head on. Its role, when
the kernel could not tell (no SYN seen), comes from the listening ports of the
host, and failing that from the direction of the first request.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path

from ..bpf.clock import MonotonicClock
from ..bpf.events import ConnEvent, EventType, SockDataEvent
from ..protocols.http1 import Http1Stats
from ..records import Connection, Direction, Exchange, Role, TcpHealth
from .detect import DetectingSession, Http2Stats

__all__ = ["ConnectionTable", "ListeningPorts", "TableStats"]

# Connections tracked at once. Each holds two small parser states; past this the
# least recently active one is dropped (counted) — a busy proxy host has tens of
# thousands of sockets, most idle.
DEFAULT_MAX_CONNECTIONS = 16384
# A connection silent this long is forgotten (its close was missed, e.g. the
# process died, or the close event was lost).
DEFAULT_IDLE_TIMEOUT_S = 300.0


class TableStats:
    __slots__ = ("events", "data_events", "connections_opened", "connections_closed", "evicted", "expired",
                 "skipped_dead", "exchanges")

    def __init__(self) -> None:
        for name in self.__slots__:
            setattr(self, name, 0)

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


class ListeningPorts:
    """Local TCP ports in LISTEN state, from /proc/net/tcp{,6}, re-read at most once a second."""

    def __init__(self, *, proc_root: str = "/proc", min_refresh_s: float = 1.0):
        self._files = [Path(proc_root) / "net" / "tcp", Path(proc_root) / "net" / "tcp6"]
        self._ports: set[int] = set()
        self._read_at = 0.0
        self._min_refresh = min_refresh_s

    def _refresh(self) -> None:
        ports = set()
        for path in self._files:
            try:
                lines = path.read_text().splitlines()[1:]
            except OSError:
                continue
            for line in lines:
                fields = line.split()
                if len(fields) > 3 and fields[3] == "0A":  # TCP_LISTEN
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
        self._ports = ports
        self._read_at = time.monotonic()

    def is_listening(self, port: int) -> bool:
        if port not in self._ports and time.monotonic() - self._read_at >= self._min_refresh:
            self._refresh()
        return port in self._ports


HEALTH_CHANGES = 16  # per connection: the (time, retransmits) of its last retransmit-count changes


def _with_health(done: list[Exchange], entry: _Entry) -> list[Exchange]:
    """Exchanges with the TCP health of their connection over them: the retransmits since the count
    in effect at the exchange's start (the last change at or before it, else the oldest kept), and
    the latest smoothed RTT."""
    changes = entry.health
    last = entry.retrans
    if changes is None:  # the count never changed since the first syscall seen: none over any exchange
        if last < 0:
            return done
        health = TcpHealth(0, entry.srtt)
        for ex in done:
            _set_field(ex, "tcp", health)
        return done
    health = None
    for ex in done:
        base = changes[0][1]
        start = ex.start_ns
        for ts, retrans in reversed(changes):
            if ts <= start:
                base = retrans
                break
        if health is None or health.retransmits != last - base:
            health = TcpHealth(max(0, last - base), entry.srtt)
        # Set on the record in place: the session has just made it and nothing else holds it yet
        # (dataclasses.replace costs ~8 µs per exchange on this path, a tenth of the receiver's budget).
        _set_field(ex, "tcp", health)
    return done


_set_field = object.__setattr__  # frozen dataclasses refuse plain assignment


class _Entry:
    # A connection's TCP health is kept as its retransmit count's changes (it rarely changes), not
    # one sample per syscall: 16 samples were ~1.9 KB per busy connection, this is ~150 bytes.
    __slots__ = ("sock_id", "session", "last_seen", "health", "first_seen", "retrans", "srtt")

    def __init__(self, sock_id: int, session: DetectingSession, last_seen: int):
        self.sock_id = sock_id
        self.session = session
        self.last_seen = last_seen
        # (wall ts, retransmits) at its first syscall and its last HEALTH_CHANGES changes after it;
        # None while the count has not changed since the first (most connections: no list at all).
        self.health: list[tuple[int, int]] | None = None
        self.first_seen = 0  # wall ts of the first syscall with a retransmit count
        self.retrans = -1  # at the latest syscall (-1: none seen yet)
        self.srtt = 0  # smoothed RTT at the latest syscall, µs


class ConnectionTable:
    def __init__(
        self,
        *,
        clock: MonotonicClock,
        stats: Http1Stats,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
        listening: ListeningPorts | None = None,
        http2_stats=None,
    ):
        self._clock = clock
        self.http1_stats = stats
        self.http2_stats = http2_stats if http2_stats is not None else (Http2Stats() if Http2Stats else None)
        self.stats = TableStats()
        self._max = max_connections
        self._idle_ns = int(idle_timeout_s * 1e9)
        self._listening = listening or ListeningPorts()
        self._conns: OrderedDict[int, _Entry] = OrderedDict()
        # Called with (pid, comm or "") of every new connection: lets the agent read
        # /proc while a short-lived client still exists. Must be cheap (cached).
        self.on_new_process = None
        # Called with every RequestStart (see Http1Session.on_request); None: not emitted.
        self.on_request = None

    def __len__(self) -> int:
        return len(self._conns)

    def _role(self, event: SockDataEvent | ConnEvent) -> Role:
        if event.role != Role.UNKNOWN:
            return event.role
        if self._listening.is_listening(event.local_port):
            return Role.SERVER
        if self._listening.is_listening(event.remote_port) and event.remote_address.startswith(("127.", "::1")):
            return Role.CLIENT
        return Role.UNKNOWN  # the session infers it from the first request's direction

    def _new_entry(self, event: SockDataEvent | ConnEvent, *, midstream: bool) -> _Entry:
        if self.on_new_process is not None:
            try:
                self.on_new_process(event.tgid, getattr(event, "comm", ""))
            except Exception:  # enrichment is best effort
                pass
        conn = Connection(
            pid=event.tgid, fd=event.fd, sock_id=event.sock_id, family=event.family,
            local_address=event.local_address, local_port=event.local_port,
            remote_address=event.remote_address, remote_port=event.remote_port, role=self._role(event),
        )
        session = DetectingSession(conn, http1_stats=self.http1_stats, http2_stats=self.http2_stats,
                                   midstream=midstream)
        session.on_request = self.on_request
        return _Entry(event.sock_id, session, 0)

    def _insert(self, key: int, entry: _Entry) -> list[Exchange]:
        out: list[Exchange] = []
        old = self._conns.pop(key, None)
        if old is not None:
            out = self._finish(old, entry.last_seen)
        self._conns[key] = entry
        while len(self._conns) > self._max:
            _key, victim = self._conns.popitem(last=False)
            self.stats.evicted += 1
            out.extend(self._finish(victim, victim.last_seen))
        return out

    def _finish(self, entry: _Entry, mono_ts: int) -> list[Exchange]:
        if entry.session.dead:
            return []
        out = entry.session.on_close(self._clock.to_wall(mono_ts))
        self.stats.exchanges += len(out)
        return out

    def handle(self, event: SockDataEvent | ConnEvent) -> list[Exchange]:
        """Feed one decoded event; returns the exchanges it completed."""
        self.stats.events += 1
        key = event.tgid << 32 | event.fd  # (process, fd) as one int: ~50 bytes less per connection than a tuple
        if type(event) is SockDataEvent:
            self.stats.data_events += 1
            entry = self._conns.get(key)
            out: list[Exchange] = []
            if entry is None or entry.sock_id != event.sock_id:
                entry = self._new_entry(event, midstream=True)
                entry.last_seen = event.ts_exit
                out = self._insert(key, entry)
            else:
                self._conns.move_to_end(key)
                entry.last_seen = event.ts_exit
            session = entry.session
            if session.dead:
                self.stats.skipped_dead += 1
                return out
            to_wall = self._clock.to_wall
            ts_last = to_wall(event.ts_exit)
            ts_first = to_wall(event.ts_enter) if event.direction == Direction.EGRESS else ts_last
            retrans = event.total_retrans
            if retrans != entry.retrans:
                health = entry.health
                if health is not None:
                    health.append((ts_last, retrans))
                    if len(health) > HEALTH_CHANGES:
                        del health[0]
                elif entry.retrans < 0:
                    entry.first_seen = ts_last
                else:
                    entry.health = [(entry.first_seen, entry.retrans), (ts_last, retrans)]
                entry.retrans = retrans
            entry.srtt = event.srtt_us
            if event.segments:
                done = []
                for data, missing in event.pieces():
                    done += session.on_data(event.direction, data, ts_first, ts_last, missing=missing, tid=event.tid)
            else:
                done = session.on_data(event.direction, event.data, ts_first, ts_last, missing=event.missing,
                                       tid=event.tid)
            if done:
                done = _with_health(done, entry)
                self.stats.exchanges += len(done)
                if not out:
                    return done
                out.extend(done)
            return out
        if event.type == EventType.CONN_OPEN:
            self.stats.connections_opened += 1
            entry = self._new_entry(event, midstream=False)
            entry.last_seen = event.ts
            return self._insert(key, entry)
        # CONN_CLOSE
        entry = self._conns.get(key)
        if entry is None or entry.sock_id != event.sock_id:
            return []
        del self._conns[key]
        self.stats.connections_closed += 1
        return self._finish(entry, event.ts)

    def expire(self, now_mono_ns: int) -> list[Exchange]:
        """Drop connections idle for longer than the idle timeout (oldest first)."""
        out: list[Exchange] = []
        limit = now_mono_ns - self._idle_ns
        while self._conns:
            key, entry = next(iter(self._conns.items()))
            if entry.last_seen > limit:
                break
            del self._conns[key]
            self.stats.expired += 1
            out.extend(self._finish(entry, entry.last_seen))
        return out

    def close_all(self) -> list[Exchange]:
        """Flush every connection (shutdown): close-delimited bodies end, unanswered requests are reported."""
        out: list[Exchange] = []
        while self._conns:
            _key, entry = self._conns.popitem(last=False)
            out.extend(self._finish(entry, entry.last_seen))
        return out

    def connections(self) -> list[Connection]:
        return [replace(e.session.connection) for e in self._conns.values()]
