"""``otel-ebpf``: the command line.

Usage::

    otel-ebpf run [--config FILE] [--pid PID]... [--port PORT]... [--duration SECONDS] [--record FILE]
    otel-ebpf replay FILE [--config FILE]     # feed a recording through the pipeline, no kernel needed
    otel-ebpf check                           # can the probes run here?

``run`` logs one line containing ``otel-ebpf ready`` on stderr once every probe
is attached. On SIGINT/SIGTERM, or after ``--duration``, it stops capture,
flushes all telemetry, detaches every probe and exits 0. Errors are one line on
stderr saying what to do, with exit code 2 (bad usage/config) or 1 (host).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time

from . import __version__
from .bpf.libbpf import BpfError
from .bpf.preflight import PreflightError, preflight
from .service.config import ConfigError, ServiceConfig

log = logging.getLogger("otel_ebpf")


def _positive_port(text: str) -> int:
    v = int(text)
    if not 0 < v < 65536:
        raise argparse.ArgumentTypeError(f"{text} is not a TCP port")
    return v


def _positive_int(text: str) -> int:
    v = int(text)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be positive")
    return v


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="otel-ebpf", description="eBPF capture → OpenTelemetry spans and metrics")
    p.add_argument("--version", action="version", version=f"otel-ebpf {__version__}")
    p.add_argument("--log-level", default=os.environ.get("OTEL_EBPF_LOG_LEVEL", "info"),
                   choices=["debug", "info", "warning", "error"])
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="capture on this host and export telemetry")
    run.add_argument("--config", help="Collector-style YAML (default: the embedded default)")
    run.add_argument("--pid", type=_positive_int, action="append", default=[], help="only this process (repeatable)")
    run.add_argument("--port", type=_positive_port, action="append", default=[],
                     help="only connections with this local or remote port (repeatable)")
    run.add_argument("--duration", type=float, help="stop after this many seconds")
    run.add_argument("--record", help="also write the raw kernel events to this file (for `replay`)")
    run.add_argument("--no-summary", action="store_true", help="do not print the live summary")
    rep = sub.add_parser("replay", help="run a recording through the pipeline (no kernel needed)")
    rep.add_argument("recording")
    rep.add_argument("--config", help="Collector-style YAML (default: the embedded default)")
    sub.add_parser("check", help="check that this host can run the probes")
    return p


def _load_config(path: str | None, *, no_summary: bool = False) -> ServiceConfig:
    cfg = ServiceConfig.from_yaml_file(path) if path else ServiceConfig.embedded_default(environ=dict(os.environ))
    if no_summary:
        for pipe in cfg.pipelines.values():
            pipe.exporters = [e for e in pipe.exporters if cfg.exporters[e].type != "summary"]
    return cfg


def _cmd_run(args) -> int:
    from .service.runtime import MallocTuning, tune_gc

    malloc = MallocTuning()  # before the agent's threads exist
    from .service.agent import Agent

    cfg = _load_config(args.config, no_summary=args.no_summary)
    preflight()
    agent = Agent(cfg, pids=args.pid, ports=args.port, record_path=args.record)
    stop = threading.Event()

    def on_signal(signum, _frame):
        log.info("received %s, stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        agent.start()
    except BaseException:
        agent.shutdown(timeout_s=5)
        raise
    tune_gc()  # start-up's objects out of the collector's reach; collections spaced out
    print(f"otel-ebpf ready: {len(agent.attached_programs)} probes attached, pid {os.getpid()}",
          file=sys.stderr, flush=True)
    try:
        deadline = None if args.duration is None else time.monotonic() + args.duration
        while not stop.is_set():
            timeout = 0.5 if deadline is None else min(0.5, max(0.0, deadline - time.monotonic()))
            if deadline is not None and time.monotonic() >= deadline:
                break
            stop.wait(timeout)
            malloc.maybe_trim(time.monotonic())
    finally:
        agent.shutdown()
    print("otel-ebpf stopped: telemetry flushed, probes detached", file=sys.stderr, flush=True)
    return 0


def _cmd_replay(args) -> int:
    from .bpf.btf import BpfObjectInfo
    from .bpf.clock import MonotonicClock
    from .bpf.events import SockDataCodec
    from .bpf.recording import Recording
    from .bpf.sockdata import object_path
    from .service.agent import Agent

    cfg = _load_config(args.config, no_summary=True)
    recording = Recording.open(args.recording)
    info = BpfObjectInfo.from_file(object_path())
    recording.check_layout(info)
    codec = SockDataCodec(info)
    agent = Agent(cfg)
    agent.pipeline.start()
    clock = MonotonicClock()
    clock.offset_ns = recording.clock_offset_ns
    from .receivers.http import HttpReceiver

    table = next(r for r in agent.receivers if isinstance(r, HttpReceiver)).table
    table._clock = clock
    n = 0
    for raw in recording.records():
        ev = codec.decode(raw)
        if ev is not None:
            for ex in table.handle(ev):
                agent.head.consume(ex)
                n += 1
    for ex in table.close_all():
        agent.head.consume(ex)
        n += 1
    agent.pipeline.shutdown(timeout_s=60)
    print(f"otel-ebpf replay: {n} exchanges from {args.recording}", file=sys.stderr)
    return 0


def _cmd_check(_args) -> int:
    from .bpf.sockdata import SockDataTracer

    preflight()
    tracer = SockDataTracer()
    tracer.start()
    n = len(tracer.attached)
    tracer.close()
    print(f"otel-ebpf check: ok, {n} probes loaded and attached")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    try:
        if args.command == "run":
            return _cmd_run(args)
        if args.command == "replay":
            return _cmd_replay(args)
        return _cmd_check(args)
    except ConfigError as e:
        print(f"otel-ebpf: config error: {e}", file=sys.stderr)
        return 2
    except (PreflightError, BpfError) as e:
        print(f"otel-ebpf: error: {e}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as e:
        print(f"otel-ebpf: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
