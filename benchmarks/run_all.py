"""`make bench`: every benchmark in turn. Not part of the tests; prints figures measured in one run."""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent

for script, args in (("bench_http1_parser.py", []), ("bench_pipeline.py", []), ("bench_overhead.py", []),
                     ("bench_e2e.py", []), ("bench_export.py", []), ("bench_flows.py", []),
                     ("bench_scaling.py", []), ("bench_kube_cache.py", [])):
    print(f"\n##### {script}", flush=True)
    subprocess.run([sys.executable, str(HERE / script), *args], check=True)
