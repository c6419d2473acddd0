"""What the protocol parsers share.

Usage::

    from otel_ebpf.protocols.common import exchange_ids
    exchange_id = next(exchange_ids)
"""

from __future__ import annotations

import itertools

__all__ = ["exchange_ids"]

exchange_ids = itertools.count(1)
"""Exchange ids, unique in the process across protocols (``RequestStart.exchange_id ==
Exchange.exchange_id``)."""
