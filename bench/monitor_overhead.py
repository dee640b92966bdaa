"""Benchmark: cost of WorkloadMonitor's request-path calls (issue 3 target: admission + completion < 20 us).

Records ``N`` requests (admission, first token, completion) spread over 4 classes with a
``WallClock`` (the live clock, ``time.monotonic``) and Prometheus counters on, repeats ``REPEATS``
times, and writes the per-request costs (median over repeats) to
``bench/results/monitor_overhead.json``. Also times ``snapshot()`` (10 s window) and
``rate_history()`` on a monitor holding a full 600 s history.

Usage: ``python bench/monitor_overhead.py [--requests 100000] [--repeats 5]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "monitor_overhead.json"))
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from oserve.clock import SimClock, WallClock
    from oserve.types import DEFAULT_SCHEME
    from oserve.workload.monitor import WorkloadMonitor

    classes = DEFAULT_SCHEME.classes
    n = args.requests
    ids = [f"cmpl-{i:08d}" for i in range(n)]
    cls = [classes[i % 4] for i in range(n)]
    adm_plus_done, adm_only, first_only, done_only, snap_us, hist_us = [], [], [], [], [], []
    for _ in range(args.repeats):
        mon = WorkloadMonitor(DEFAULT_SCHEME, WallClock(), window_s=10.0, history_s=600.0)
        t0 = time.perf_counter()
        for rid, c in zip(ids, cls, strict=True):
            mon.record_admission(rid, c, 1000, 128)
        t1 = time.perf_counter()
        for rid in ids:
            mon.record_first_token(rid)
        t2 = time.perf_counter()
        for rid in ids:
            mon.record_completion(rid, 120, True)
        t3 = time.perf_counter()
        adm_only.append((t1 - t0) / n * 1e6)
        first_only.append((t2 - t1) / n * 1e6)
        done_only.append((t3 - t2) / n * 1e6)
        # interleaved, as in the request path
        mon2 = WorkloadMonitor(DEFAULT_SCHEME, WallClock())
        t0 = time.perf_counter()
        for rid, c in zip(ids, cls, strict=True):
            mon2.record_admission(rid, c, 1000, 128)
            mon2.record_completion(rid, 120, True)
        adm_plus_done.append((time.perf_counter() - t0) / n * 1e6)
        # readers on a monitor holding a full 600 s history (SimClock, 10 req/s)
        clock = SimClock(0.0)
        full = WorkloadMonitor(DEFAULT_SCHEME, clock, window_s=10.0, history_s=600.0)
        for i in range(6000):
            clock.advance_to(i * 0.1)
            full.record_admission(ids[i], cls[i], 1000, 128)
        clock.advance_to(600.0)
        t0 = time.perf_counter()
        for _ in range(200):
            full.snapshot()
        snap_us.append((time.perf_counter() - t0) / 200 * 1e6)
        t0 = time.perf_counter()
        for _ in range(50):
            _, rates = full.rate_history()
        hist_us.append((time.perf_counter() - t0) / 50 * 1e6)
        assert rates.shape == (600, 4)
    med = statistics.median
    out = {
        "benchmark": "monitor_overhead",
        "requests_per_repeat": n,
        "repeats": args.repeats,
        "us_admission_plus_completion": med(adm_plus_done),
        "us_admission": med(adm_only),
        "us_first_token": med(first_only),
        "us_completion": med(done_only),
        "us_snapshot": med(snap_us),
        "us_rate_history_600s": med(hist_us),
        "all_repeats_us_admission_plus_completion": adm_plus_done,
        "target_us_admission_plus_completion": 20.0,
        "meets_target": med(adm_plus_done) < 20.0,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform(),
                    "loadavg_1m": os.getloadavg()[0]},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
