"""Checks that the kernel path can work here, each failing with one actionable line.

Usage::

    from otel_ebpf.bpf.preflight import preflight, PreflightError
    try:
        preflight()
    except PreflightError as e:
        sys.exit(f"otel-ebpf: {e}")
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from .libbpf import BpfError, libbpf_available

__all__ = ["PreflightError", "preflight", "ensure_tracefs"]

TRACEFS = Path("/sys/kernel/tracing")
BTF_PATH = Path("/sys/kernel/btf/vmlinux")
_CAP_SYS_ADMIN, _CAP_PERFMON, _CAP_BPF = 21, 38, 39


class PreflightError(RuntimeError):
    """The host cannot run the kernel probes; the message says what to do."""


def _effective_caps() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    except OSError:
        pass
    return 0


def has_bpf_privileges() -> bool:
    caps = _effective_caps()
    if caps & (1 << _CAP_SYS_ADMIN):
        return True
    return bool(caps & (1 << _CAP_BPF)) and bool(caps & (1 << _CAP_PERFMON))


def ensure_tracefs() -> None:
    """Mount tracefs at /sys/kernel/tracing when it is not there yet."""
    if (TRACEFS / "events").is_dir():
        return
    try:
        subprocess.run(["mount", "-t", "tracefs", "nodev", str(TRACEFS)], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as e:
        raise PreflightError(
            f"tracefs is not mounted and mounting it failed ({e}); run as root or "
            "`mount -t tracefs nodev /sys/kernel/tracing`"
        ) from None
    if not (TRACEFS / "events").is_dir():
        raise PreflightError("tracefs mounted but /sys/kernel/tracing/events is missing: kernel without tracepoints?")


def preflight(*, btf_path: Path = BTF_PATH) -> None:
    if not has_bpf_privileges():
        raise PreflightError(
            "not enough privilege to load BPF programs: run as root, or grant CAP_BPF + CAP_PERFMON "
            "(e.g. `sudo otel-ebpf run`)"
        )
    if not btf_path.exists():
        raise PreflightError(
            f"this kernel exposes no BTF ({btf_path} is missing): otel-ebpf needs a kernel >= 5.8 built with "
            "CONFIG_DEBUG_INFO_BTF=y"
        )
    if not libbpf_available():
        raise PreflightError("libbpf.so.1 not found: install it with `apt-get install libbpf1` (or `make setup`)")
    try:
        ensure_tracefs()
    except PreflightError:
        raise
    except BpfError as e:  # pragma: no cover - defensive
        raise PreflightError(str(e)) from None
    _ = os.geteuid()
