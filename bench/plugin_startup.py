"""How long the pytest plugin's fake-backend stack takes to start and stop (``oserve_stack``).

Run: ``.venv/bin/python bench/plugin_startup.py``; writes ``bench/results/plugin_startup.json``.
The first start of a process includes importing FastAPI, uvicorn and the endpoint; later ones do not.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path

from oserve.testing import StackThread, serve_config

OUT = Path(__file__).resolve().parent / "results" / "plugin_startup.json"


def main(repeats: int = 10) -> dict:
    starts, stops = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        st = StackThread(serve_config("fake"), start_timeout_s=60).start()
        t1 = time.perf_counter()
        st.stop()
        starts.append(t1 - t0)
        stops.append(time.perf_counter() - t1)
    res = {
        "what": "StackThread(serve_config('fake')) start (HTTP endpoint listening) and stop, seconds",
        "first_start_s": starts[0], "warm_start_median_s": statistics.median(starts[1:]),
        "warm_start_max_s": max(starts[1:]), "stop_median_s": statistics.median(stops), "repeats": repeats,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "note": "shared CI machine"},
    }
    OUT.write_text(json.dumps(res, indent=2) + "\n")
    return res


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
