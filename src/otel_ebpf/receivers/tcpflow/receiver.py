"""The ``tcpflow`` receiver: one TcpFlow record per TCP connection (at close, and every
``flow_interval`` while it lives), from the tcpflow tracer, handed to ``consumer.consume_flow``.

Usage::

    receiver = TcpFlowReceiver(TcpFlowReceiverConfig(flow_interval=15.0), pipeline)
    receiver.start()       # loads and attaches the probes; raises when the host cannot
    ...
    receiver.shutdown()    # detaches; what the kernel already wrote is delivered first
"""

from __future__ import annotations

import logging
import threading

from ...bpf.tcpflow import TcpFlowTracer
from ...records import TcpFlow
from .config import TcpFlowReceiverConfig
from ...threads import name_os_thread

__all__ = ["TcpFlowReceiver"]

log = logging.getLogger(__name__)


class TcpFlowReceiver:
    def __init__(self, config: TcpFlowReceiverConfig, consumer, *, tracer: TcpFlowTracer | None = None):
        config.validate()
        self.config = config
        self._consume = consumer.consume_flow
        self._tracer = tracer or TcpFlowTracer(flow_interval_s=config.flow_interval,
                                               ring_bytes=config.ring_buffer_bytes)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._started = False
        self._stopped = False
        self.flows = 0
        self.consumer_errors = 0
        self.last_stats: dict[str, int] = {}

    def start(self) -> None:
        if self._started:
            return
        self._tracer.start()
        self._started = True
        self._thread = threading.Thread(target=self._run, name="otel-ebpf-tcpflow-receiver", daemon=True)
        self._thread.start()

    @property
    def attached_programs(self) -> list[str]:
        return list(self._tracer.attached)

    def _deliver(self, flows: list[TcpFlow]) -> None:
        for flow in flows:
            self.flows += 1
            try:
                self._consume(flow)
            except Exception:  # a consumer bug must not stop capture
                self.consumer_errors += 1
                log.exception("consumer failed on a flow")

    def _run(self) -> None:
        name_os_thread()
        timeout = self.config.poll_interval_ms
        while not self._stop.is_set():
            try:
                self._deliver(self._tracer.poll(timeout))
            except Exception:
                log.exception("tcpflow receiver loop error (continuing)")
                self._stop.wait(0.1)
        self._deliver(self._tracer.poll(0))

    def stats(self) -> dict[str, int]:
        """Kernel-side counters of the tracer, and what was delivered."""
        if self._started and not self._stopped:
            out = {f"kernel.{k}": v for k, v in self._tracer.stats().items()}
        else:
            out = dict(self.last_stats)
        out["flows"] = self.flows
        out["consumer_errors"] = self.consumer_errors
        return out

    def shutdown(self) -> None:
        """Stop reading and detach every probe. Safe twice and before start."""
        if self._stopped:
            return
        if self._started:
            self.last_stats = self.stats()
        self._stopped = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self._tracer.close()
