"""Wall time of long CLI commands with their default settings (does the default finish in about a minute?).

Runs ``oserve forecast-backtest`` on the two Azure LLM inference 2023 traces with default settings
(as a user would, in a subprocess).
Writes ``bench/results/cli_defaults.json``: wall seconds, the forecasters run, the machine's load
average at the start (the machine may be shared), and the Python and platform versions.

Usage: ``python bench/cli_defaults.py [--traces DIR] [--out FILE]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--traces", default=str(ROOT / "data" / "traces" / "azure_llm_2023"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "cli_defaults.json"))
    args = ap.parse_args()
    traces = [str(Path(args.traces) / f"AzureLLMInferenceTrace_{t}.csv") for t in ("code", "conv")]
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "oserve.cli", "forecast-backtest", *traces, "--no-progress"],
                              cwd=tmp, capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)})
        wall = time.perf_counter() - t0
        report = json.loads((Path(tmp) / "forecast-backtest.json").read_text()) if done.returncode == 0 else {}
    result = {
        "forecast_backtest_default": {
            "command": "oserve forecast-backtest AzureLLMInferenceTrace_code.csv AzureLLMInferenceTrace_conv.csv",
            "exit_code": done.returncode,
            "wall_s": round(wall, 2),
            "series": sorted(report.get("series", {})),
            "forecasters": sorted(next(iter(report.get("series", {}).values()), {}).get("forecasters", {})),
            "stdout_bytes": len(done.stdout),
        },
        "load_average_1m_at_start": load[0],
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0 if done.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
