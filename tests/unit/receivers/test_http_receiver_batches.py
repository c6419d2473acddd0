"""The http receiver bounds how many ring-buffer records it turns into Python objects at once."""

from __future__ import annotations

import time
from types import SimpleNamespace

from otel_ebpf.receivers.http import HttpReceiver, HttpReceiverConfig
from otel_ebpf.receivers.http.receiver import MAX_BATCH_RECORDS
from otel_ebpf.testing import ExchangeSink


class _Tracer:
    """Stands in for SockDataTracer: no kernel, an empty ring."""

    def __init__(self) -> None:
        self.attached: list[str] = []
        self.codec = SimpleNamespace(decode=lambda record: None)

    def start(self) -> None:
        pass

    def poll_raw(self, timeout_ms: int = 100) -> list[bytes]:
        time.sleep(timeout_ms / 1000)
        return []

    def stats(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        pass


def test_the_receiver_asks_its_tracer_for_bounded_batches():
    receiver = HttpReceiver(HttpReceiverConfig(), ExchangeSink())
    assert receiver._tracer.max_batch == MAX_BATCH_RECORDS < 65536


class _BacklogTracer(_Tracer):
    """A ring still holding three batches when the receiver stops."""

    def __init__(self) -> None:
        super().__init__()
        self.backlog: list[list[bytes]] = []
        self.decoded = 0
        self.codec = SimpleNamespace(decode=self._decode)

    def _decode(self, record):
        self.decoded += 1
        return None

    def poll_raw(self, timeout_ms: int = 100) -> list[bytes]:
        if timeout_ms == 0 and self.backlog:
            return self.backlog.pop(0)
        time.sleep(timeout_ms / 1000)
        return []


def test_at_stop_the_receiver_drains_the_whole_backlog_not_one_batch():
    tracer = _BacklogTracer()
    receiver = HttpReceiver(HttpReceiverConfig(poll_interval_ms=10), ExchangeSink(), tracer=tracer)
    receiver.start()
    tracer.backlog = [[b"x"] * MAX_BATCH_RECORDS for _ in range(3)]
    receiver.shutdown()
    assert tracer.backlog == [] and tracer.decoded == 3 * MAX_BATCH_RECORDS
