"""The agent's threads carry their names into the kernel (top -H, per-thread CPU in benchmarks)."""

from __future__ import annotations

import threading
from pathlib import Path

from otel_ebpf.threads import name_os_thread, os_thread_name


def test_names_are_shortened_to_what_the_kernel_keeps():
    assert os_thread_name("otel-ebpf-http-receiver") == "oebpf-http"
    assert os_thread_name("otel-ebpf-pipeline") == "oebpf-pipeline"
    assert os_thread_name("otel-ebpf-informer-Deployment") == "oebpf-informer-"
    assert len(os_thread_name("x" * 40).encode()) == 15


def test_a_thread_names_itself_in_procfs():
    seen = {}

    def run():
        name_os_thread()
        seen["comm"] = Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text().strip()

    t = threading.Thread(target=run, name="otel-ebpf-export")
    t.start()
    t.join()
    assert seen["comm"] == "oebpf-export"
