"""Feeding helpers shared by test_http1 and test_http2: fixtures (tests/fixtures/http*) loaded as
chunks, cut into pieces a receiver would feed (whole, byte at a time, random splits, with trailing
bytes, truncated like the kernel capture), and fed to a session."""

from __future__ import annotations

import itertools
import json
import random
from dataclasses import dataclass, replace
from pathlib import Path

from otel_ebpf.records import Connection, Direction, Role

FIXTURES_ROOT = Path(__file__).resolve().parents[2] / "fixtures"
CLOSE_TS = 10**9
CONN = Connection(pid=42, fd=7, sock_id=0xFFFF0000, family=4, local_address="127.0.0.1", local_port=8080,
                  remote_address="127.0.0.1", remote_port=50000)


def load(name: str, directory: Path) -> list[tuple[str, bytes]]:
    """The fixture's chunks in capture order: ("c", client bytes) / ("s", server bytes)."""
    meta = json.loads((directory / f"{name}.json").read_text())
    streams = {"c": (directory / f"{name}.request.bin").read_bytes(),
               "s": (directory / f"{name}.response.bin").read_bytes()}
    offsets = {"c": 0, "s": 0}
    chunks = []
    for side, size in meta["chunks"]:
        chunks.append((side, streams[side][offsets[side]:offsets[side] + size]))
        offsets[side] += size
    assert offsets == {side: len(data) for side, data in streams.items()}
    return chunks


@dataclass
class Piece:
    side: str
    data: bytes
    ts_first: int
    ts_last: int
    tid: int
    missing: int = 0


def whole(data: bytes, rng: random.Random) -> list[bytes]:
    return [data]


def bytewise(data: bytes, rng: random.Random) -> list[bytes]:
    return [data[i:i + 1] for i in range(len(data))]


def random_splits(data: bytes, rng: random.Random) -> list[bytes]:
    cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(1, 12)))) if len(data) > 1 else []
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def units_of(chunks, *, merge=True):
    """Chunks as read/write units: ``merge`` joins consecutive chunks of one side."""
    units: list[list] = []
    for side, data in chunks:
        if merge and units and units[-1][0] == side:
            units[-1][1] += data
        else:
            units.append([side, data])
    return units


def pieces(chunks, split=whole, *, merge=True, max_capture=None, trailing=b"", seed=0) -> list[Piece]:
    """Chunks as a receiver would feed them. ``merge``: consecutive chunks of one side form one unit
    (one read/write), else each recorded chunk is a unit. Every piece of a unit carries the unit's
    timestamps and tid, so any split of a unit must give the same exchanges as the whole unit.
    ``max_capture`` truncates each unit like the kernel capture does. ``trailing`` is appended to the
    last client unit."""
    units = units_of(chunks, merge=merge)
    if trailing:
        last_client = max(i for i, (side, _) in enumerate(units) if side == "c")
        units[last_client][1] += trailing
    rng = random.Random(seed)
    out = []
    for index, (side, data) in enumerate(units):
        ts = 1000 * (index + 1)
        if max_capture is not None and len(data) > max_capture:
            out.append(Piece(side, data[:max_capture], ts, ts + 10, index + 1, len(data) - max_capture))
            continue
        out.extend(Piece(side, part, ts, ts + 10, index + 1) for part in split(data, rng))
    return out


def direction(side: str, view: str) -> Direction:
    """``view`` "server": the watched process is the server (reads requests), "client": it sent them."""
    if view == "server":
        return Direction.INGRESS if side == "c" else Direction.EGRESS
    return Direction.EGRESS if side == "c" else Direction.INGRESS


def run_session(session_class, stats, feed, *, view="server", role=None, close=True, **options):
    """Feeds ``feed`` to a fresh ``session_class`` session counting into ``stats``; returns
    (exchanges before close, exchanges at close, session, stats)."""
    if role is None:
        role = Role.SERVER if view == "server" else Role.CLIENT
    session = session_class(replace(CONN, role=role), stats=stats, **options)
    out = []
    for p in feed:
        out += session.on_data(direction(p.side, view), p.data, p.ts_first, p.ts_last, missing=p.missing, tid=p.tid)
    at_close = session.on_close(CLOSE_TS) if close else []
    return out, at_close, session, stats
