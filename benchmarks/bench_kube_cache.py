"""Memory of the Kubernetes metadata cache: 10,000 pods (plus their ReplicaSets, Deployments and
Services) served by the in-repo fake API server, listed and watched through the official client.

    .venv/bin/python benchmarks/bench_kube_cache.py [--pods 10000]

Prints the Python heap the cache holds once in sync (tracemalloc: what the informers' stores and
indexes keep after the list responses are gone, apart from the modules the client imports once),
bytes per pod, the process RSS growth, and how
long the initial sync took. The fake server runs in this process too; its own objects are
allocated before the measurement starts and are not counted.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import save_results  # noqa: E402

from otel_ebpf.kube.metadata import KubeConfig, KubeMetadata  # noqa: E402
from otel_ebpf.testing.fake_kube import (  # noqa: E402
    FakeKubeApiServer,
    make_deployment,
    make_pod,
    make_replicaset,
    make_service,
)


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pods", type=int, default=10_000)
    parser.add_argument("--top", action="store_true", help="print the largest allocation sites")
    args = parser.parse_args()
    n = args.pods
    per_deployment = 10
    with FakeKubeApiServer(bookmark_interval=30) as kube:
        for d in range(n // per_deployment):
            ns = f"team-{d % 50}"
            kube.add(make_deployment(f"app-{d}", ns, labels={"app.kubernetes.io/name": f"app-{d}"}))
            kube.add(make_replicaset(f"app-{d}-5f7c", ns, owner_deployment=f"app-{d}"))
            kube.add(make_service(f"app-{d}", ns, cluster_ip=f"127.20.{d // 250}.{d % 250}",
                                  selector={"app.kubernetes.io/name": f"app-{d}"}))
            for i in range(per_deployment):
                k = d * per_deployment + i
                kube.add(make_pod(f"app-{d}-5f7c-{i}", ns, ip=f"127.{10 + k // 62500}.{k // 250 % 250}.{k % 250}",
                                  node="node-1", owner=("ReplicaSet", f"app-{d}-5f7c"),
                                  labels={"app.kubernetes.io/name": f"app-{d}", "pod-template-hash": "5f7c"},
                                  annotations={"kubectl.kubernetes.io/restartedAt": "2026-11-23T08:00:00Z"}))
        gc.collect()
        rss0 = rss_kib()
        tracemalloc.start()
        base = tracemalloc.take_snapshot()
        meta = KubeMetadata(KubeConfig(node_name="node-1", istio="off"), api_client=kube.api_client())
        t0 = time.monotonic()
        meta.start()
        assert meta.wait_synced(300), "not in sync"
        synced_s = time.monotonic() - t0
        time.sleep(1.0)  # let the list responses be freed
        gc.collect()
        snap = tracemalloc.take_snapshot()
        diffs = snap.compare_to(base, "lineno")
        held = sum(s.size_diff for s in diffs)
        imports = sum(s.size_diff for s in diffs if s.traceback[0].filename.startswith("<frozen importlib"))
        if "--top" in sys.argv:
            for stat in diffs[:12]:
                print(stat)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rss1 = rss_kib()
        pods = len(meta.informers["Pod"].store)
        assert pods == n, pods
        print(f"pods {pods}  services {len(meta.informers['Service'].store)}"
              f"  replicasets {len(meta.informers['ReplicaSet'].store)}")
        data = held - imports
        print(f"cache heap held: {held / 2**20:.1f} MiB, of which {imports / 2**20:.1f} MiB one-time module imports"
              f" (the client's models); data {data / 2**20:.1f} MiB = {data / pods:.0f} bytes per pod (stores and"
              f" indexes of every kind)  peak during sync {peak / 2**20:.1f} MiB")
        print(f"RSS growth {(rss1 - rss0) / 1024:.1f} MiB  initial sync {synced_s:.1f} s")
        save_results("bench_kube_cache", {"pods": pods, "heap_held_bytes": held, "import_bytes": imports,
                                          "bytes_per_pod": data / pods, "peak_bytes": peak,
                                          "rss_growth_kib": rss1 - rss0, "sync_s": synced_s})
        meta.stop()


if __name__ == "__main__":
    main()
