"""What the protocol parsers share.

Usage::

    from otel_ebpf.protocols.common import exchange_ids
    exchange_id = next(exchange_ids)
"""

from __future__ import annotations

import itertools

__all__ = ["SmallQueue", "exchange_ids"]

exchange_ids = itertools.count(1)
"""Exchange ids, unique in the process across protocols (``RequestStart.exchange_id ==
Exchange.exchange_id``)."""


class SmallQueue(list):
    """A FIFO for the per-connection queues that are almost always empty or one long (pipelined
    requests, their methods): a list, 56 bytes empty, where a ``deque`` allocates a 64-slot block
    (over 600 bytes) up front. ``popleft`` is O(n), and n stays tiny (bounded by ``max_pending``)."""

    __slots__ = ()

    def popleft(self):
        return self.pop(0)
