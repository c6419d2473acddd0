"""Test doubles that collect what receivers emit.

Usage::

    sink = ExchangeSink()
    receiver = HttpReceiver(HttpReceiverConfig(ports=[port]), sink)
    receiver.start()
    ...
    exchanges = sink.wait_for(10, where=lambda e: e.request.target == "/ok", timeout=10)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ..records import Exchange

__all__ = ["ExchangeSink"]


class ExchangeSink:
    """A consumer that keeps every exchange (thread-safe) and can wait for them."""

    def __init__(self) -> None:
        self._items: list[Exchange] = []
        self._cond = threading.Condition()

    def consume(self, exchange: Exchange) -> None:
        with self._cond:
            self._items.append(exchange)
            self._cond.notify_all()

    @property
    def exchanges(self) -> list[Exchange]:
        with self._cond:
            return list(self._items)

    def clear(self) -> None:
        with self._cond:
            self._items.clear()

    def matching(self, where: Callable[[Exchange], bool] | None = None) -> list[Exchange]:
        with self._cond:
            return [e for e in self._items if where is None or where(e)]

    def wait_for(self, n: int, *, where: Callable[[Exchange], bool] | None = None,
                 timeout: float = 10.0) -> list[Exchange]:
        """At least ``n`` matching exchanges, waiting up to ``timeout``; raises TimeoutError with what came."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                got = [e for e in self._items if where is None or where(e)]
                if len(got) >= n:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    summary = [(e.connection.role.name, e.request.method, e.request.target,
                                e.response.status if e.response else None) for e in self._items[-20:]]
                    raise TimeoutError(f"wanted {n} exchanges, got {len(got)} matching of {len(self._items)}; "
                                       f"last ones: {summary}")
                self._cond.wait(left)
