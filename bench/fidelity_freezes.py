"""Engine freezes in the real fidelity replays, and the simulator's p99 errors without the requests they hit.

A *freeze* is a gap of at least ``--gap-s`` seconds between two tokens of a request's stream
(:func:`freeze_events`): an engine that stops computing. Gaps that end within 1 s of each other are one event
(one engine resuming: every request it held gets its next token at once). For each load of ``--runs`` (``runs.json`` of
``bench/fidelity_real_runs.py``) this lists the events (start, length, requests hit) and, as a diagnostic
only (the goal in ``bench/results/sim_fidelity.json`` counts every request), the relative error of the
simulated TTFT / TPOT p99 over the requests no event hit, next to the error over all of them. The
simulation is ``bench/sim_fidelity_loads.py``'s ``serving`` setting as stored in ``--fidelity``.

    PYTHONPATH=$PWD .venv/bin/python bench/fidelity_freezes.py --runs bench/results/fidelity_runs_1202b/runs.json \\
        --config bench/results/fidelity_runs_1202b/sim-config.yaml --fidelity bench/results/sim_fidelity.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def freeze_events(records: list[dict[str, Any]], gap_s: float) -> list[dict[str, Any]]:
    """Engine freezes in the records' streams: ``[{"start_s", "end_s", "requests"}]`` (replay time, s).

    An event is seen in the decodes: a gap of at least ``gap_s`` between two tokens of a stream (an engine
    that computes gives every running decode a token each iteration; ``gap_s`` is above the longest
    iteration, a 2,048-token prefill, about 4 s on the replays' VMs). Gaps ending within 1 s of each other are
    one event. Requests hit: those gaps' requests, and those sent before the event's end whose first token came
    within 2 s after it (they waited in the frozen engine, then for the prefill of what piled up there).
    """
    gaps, firsts = [], []
    for r in records:
        if r.get("ttft_s") is None:
            continue
        t = float(r["send_s"]) + float(r["ttft_s"])
        firsts.append((t, float(r["send_s"]), r["index"]))
        for g in r.get("itl_s") or []:
            if g >= gap_s:
                gaps.append((t + g, t, r["index"]))
            t += g
    events: list[dict[str, Any]] = []
    for end, start, idx in sorted(gaps):
        if events and end - events[-1]["end_s"] <= 1.0:
            ev = events[-1]
            ev["end_s"], ev["start_s"] = max(ev["end_s"], end), min(ev["start_s"], start)
            ev["requests"].append(idx)
        else:
            events.append({"start_s": start, "end_s": end, "requests": [idx]})
    for ev in events:
        ev["requests"] += [i for first, sent, i in firsts
                           if sent < ev["end_s"] and ev["end_s"] - 0.05 <= first <= ev["end_s"] + 2.0
                           and first - sent >= gap_s / 2 and i not in ev["requests"]]
    return events


def _p99_error(real: np.ndarray, sim: np.ndarray) -> float | None:
    if real.size == 0:
        return None
    r, s = float(np.percentile(real, 99)), float(np.percentile(sim, 99))
    return abs(s - r) / r if r > 0 else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", required=True)
    ap.add_argument("--config", required=True, help="the simulator config of the fidelity result")
    ap.add_argument("--fidelity", default=str(ROOT / "bench/results/sim_fidelity.json"),
                    help="sim_fidelity_loads.py's result, whose 'serving' contention setting is simulated")
    ap.add_argument("--policy", default="static:smollm2-135m-fp32-1c-s32")
    ap.add_argument("--gap-s", type=float, default=5.0, help="shortest inter-token gap counted, s")
    ap.add_argument("--out", default=str(ROOT / "bench/results/fidelity_freezes.json"))
    args = ap.parse_args()
    if not (math.isfinite(args.gap_s) and args.gap_s > 0):
        ap.error(f"--gap-s must be a finite number > 0 s, got {args.gap_s:g}")
    if not Path(args.out).resolve().parent.is_dir():
        ap.error(f"--out: folder {Path(args.out).parent} does not exist")
    try:
        return _run(args)
    except (OSError, KeyError, TypeError, ValueError) as exc:  # a missing or malformed input file
        ap.error(f"{type(exc).__name__}: {exc} (--runs, --config and --fidelity: the files of "
                 "bench/fidelity_real_runs.py and bench/sim_fidelity_loads.py)")
    return 2


def _run(args: argparse.Namespace) -> int:
    sys.path.insert(0, str(ROOT / "bench"))
    from sim_fidelity_loads import _simulate

    from oserve.compose.simulation import load_table
    from oserve.sim.config import ContentionConfig, load_config
    from oserve.sim.fidelity import load_replay

    runs_path = Path(args.runs)
    meta = json.loads(runs_path.read_text())
    fid = json.loads(Path(args.fidelity).read_text())
    if not isinstance(meta, dict) or not meta.get("runs"):
        raise ValueError(f"{runs_path} holds no runs")
    cc = ContentionConfig(**fid["serving"]["contention"])
    cfg = load_config(args.config)
    table = load_table(cfg)
    labels = {json.dumps(ld["run"]["rate_factor"]): name for name, ld in fid["loads"].items()}
    out: dict[str, Any] = {"command": "python bench/fidelity_freezes.py " + " ".join(sys.argv[1:]),
                           "gap_s": args.gap_s, "runs": str(runs_path), "loads": {}}
    for run in sorted(meta["runs"], key=lambda r: r["rate_factor"]):
        records, _ = load_replay(runs_path.parent / run["records"])
        records = sorted(records, key=lambda r: r["scheduled_s"])
        sim = sorted(_simulate(records, cfg, table, args.policy, meta["slo"], cc, "a", raw=True),
                     key=lambda s: s["arrival_s"])
        events = freeze_events(records, args.gap_s)
        hit = {i for ev in events for i in ev["requests"]}
        ok = np.array([r.get("ttft_s") is not None for r in records])
        keep = ok & np.array([r["index"] not in hit for r in records])
        rt = np.array([float(r["ttft_s"]) if r.get("ttft_s") is not None else np.nan for r in records])
        st = np.array([s["first_token_s"] - s["arrival_s"] for s in sim])
        n_out = np.array([int(r.get("output_tokens") or 0) for r in records])
        e2e = np.array([float(r["e2e_s"]) if r.get("e2e_s") is not None else np.nan for r in records])
        rtpot = np.where(n_out > 1, (e2e - rt) / np.maximum(n_out - 1, 1), np.nan)
        stpot = np.array([(s["finish_s"] - s["first_token_s"]) / max(s["generated_tokens"] - 1, 1) for s in sim])
        has_tpot = ok & (n_out > 1)
        label = labels.get(json.dumps(run["rate_factor"]), f"rf{run['rate_factor']}")
        row = {
            "rate_factor": run["rate_factor"], "offered_rps": run["offered_rps"], "requests": len(records),
            "events": [{"start_s": round(e["start_s"], 2), "length_s": round(e["end_s"] - e["start_s"], 2),
                        "requests": len(e["requests"])} for e in events],
            "requests_hit": len(hit),
            "ttft_p99_error_all": _p99_error(rt[ok], st[ok]),
            "ttft_p99_error_unhit": _p99_error(rt[keep], st[keep]),
            "tpot_p99_error_all": _p99_error(rtpot[has_tpot], stpot[has_tpot]),
            "tpot_p99_error_unhit": _p99_error(rtpot[has_tpot & keep], stpot[has_tpot & keep]),
        }
        out["loads"][label] = row
        ev = ", ".join(f"{e['length_s']:.1f} s at {e['start_s']:.0f} s ({e['requests']} req.)" for e in row["events"])
        pc = {k: "n/a" if v is None else f"{v:.0%}" for k, v in row.items() if k.endswith(("_all", "_unhit"))}
        print(f"{label:11s} rf {run['rate_factor']:<5} events: {ev or '-'}; TTFT p99 error all "
              f"{pc['ttft_p99_error_all']} / unhit {pc['ttft_p99_error_unhit']}; TPOT p99 "
              f"{pc['tpot_p99_error_all']} / {pc['tpot_p99_error_unhit']}")
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
