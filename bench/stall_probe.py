"""What stalls one vLLM-CPU engine for seconds: the fidelity replay with the engines' processes sampled.

``bench/sim_fidelity_diagnosis.py`` found that the real replays' TTFT/TPOT p99 are set by 1-8 s
stalls of one engine while the other keeps streaming. This bench replays the same Azure slice as
``bench/fidelity_real_runs.py`` (2 x fp32 SmolLM2-135M, one core each, behind oserve's endpoint)
in passes on one running stack and samples, every ``--sample-s`` seconds,

* per vLLM process (``VLLM::EngineCore`` and the ``VLLM::Worker`` that runs the model; ``/proc/PID/stat``): state (R running, S sleeping, D waiting on I/O),
  major and minor page faults, CPU time (user + system), the core it last ran on;
* per core (``/proc/stat``): user, nice (the nice-19 background jobs), system, iowait, steal
  (time the hypervisor ran something else on this vCPU), idle;
* the kernel (``/proc/vmstat``): major faults and pages reclaimed, machine-wide.

Passes (``--passes``): ``run`` replays the slice, ``idleN`` waits N seconds with the engines idle.
The default ``run,run,idle75,run`` separates the hypotheses: first-seen shapes (kernel or
primitive warm-up) stall only the first pass (with ``--fresh-prompts``: passes with the same prompt
tokens are served partly from vLLM's prefix cache, which also makes later passes faster); file pages reclaimed while idle (this VM runs DAMON
``pageout`` on file-backed pages idle for >= 60 s) stall again after the idle pause, with major
page faults on the stalled engine; CPU contention or vCPU steal shows as CPU or steal time taken
from the stalled engine's core. A stall is a gap of more than ``--stall-s`` between two events of
one request's stream (send -> first token, token -> token). For every stall the engine whose
process made the least CPU progress over the gap is named the stalled engine; its page faults,
D-state samples, and its core's steal and other use are reported against the same quantities in
stall-free time, with the worker's core affinity (``affinity``).

Writes ``--out`` (default ``bench/results/stall_probe.json``) and the per-request records of each
pass next to it (``bench/results/stall_probe_runs/``).

    .venv/bin/python bench/stall_probe.py --rate-factor 0.1 --end-s 720
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SLO = {"ttft": 2.0, "tpot": 0.2}
CLK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def _proc_stat(pid: int) -> dict[str, Any] | None:
    """State, faults, CPU seconds and last core of one process (``/proc/PID/stat``, man proc(5))."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    f = raw[raw.rindex(")") + 2:].split()
    # fields after the command: 3 state, 10 minflt, 12 majflt, 14 utime, 15 stime, 24 rss (pages), 39 processor
    return {"state": f[0], "minflt": int(f[7]), "majflt": int(f[9]),
            "cpu_s": (int(f[11]) + int(f[12])) / CLK, "core": int(f[36]), "rss_mib": int(f[21]) * PAGE / 2**20}


def _cpu_stat() -> dict[str, list[float]]:
    """Per core seconds of user, nice, system, idle, iowait, steal (``/proc/stat``)."""
    out: dict[str, list[float]] = {}
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu") and line[3:4].isdigit():
            p = line.split()
            v = [int(x) / CLK for x in p[1:9]]
            out[p[0]] = [v[0], v[1], v[2], v[3], v[4], v[7]]
    return out


def _vmstat() -> dict[str, int]:
    keep = ("pgmajfault", "pgsteal_kswapd", "pgsteal_direct", "pgsteal_file", "pgsteal_anon")
    out = {}
    for line in Path("/proc/vmstat").read_text().splitlines():
        k, v = line.split()
        if k in keep:
            out[k] = int(v)
    return out


class Sampler:
    """Samples the engine processes, the cores and the kernel every ``period_s`` seconds (monotonic clock)."""

    def __init__(self, engines: dict[str, int], period_s: float) -> None:
        self.engines = engines
        self.period_s = period_s
        self.samples: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True, name="stall-probe-sampler")
        self._t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append({"t": time.monotonic(), "eng": {k: _proc_stat(p) for k, p in self.engines.items()},
                                 "cpu": _cpu_stat(), "vm": _vmstat()})
            self._stop.wait(self.period_s)

    def stop(self) -> list[dict[str, Any]]:
        self._stop.set()
        self._t.join(timeout=5)
        return self.samples


def _engine_processes() -> dict[str, int]:
    """vLLM's processes below this one: ``VLLM::EngineCore`` (scheduler) and ``VLLM::Worker`` (runs the
    model), named ``core<N>``/``worker<N>`` in start order; a worker's N is its engine core's."""
    import psutil

    found: dict[str, int] = {}
    cores: dict[int, int] = {}
    for p in sorted(psutil.Process().children(recursive=True), key=lambda q: q.pid):
        try:
            title = " ".join(p.cmdline())
        except psutil.Error:
            continue
        if "EngineCore" in title:
            cores[p.pid] = len(cores)
            found[f"core{cores[p.pid]}"] = p.pid
    for p in psutil.Process().children(recursive=True):
        try:
            title = " ".join(p.cmdline())
            parent = p.ppid()
        except psutil.Error:
            continue
        if "Worker" in title and parent in cores:
            found[f"worker{cores[parent]}"] = p.pid
    return found


def _streams(records: list[dict[str, Any]]) -> list[tuple[float, float, int, str]]:
    """Gaps (start_s, end_s, request index, kind) of every request's stream, run-relative seconds."""
    gaps = []
    for r in records:
        if r.get("ttft_s") is None:
            continue
        t = [r["send_s"], r["send_s"] + r["ttft_s"]]
        for g in r.get("itl_s") or ():
            t.append(t[-1] + g)
        for i in range(len(t) - 1):
            gaps.append((t[i], t[i + 1], int(r["index"]), "ttft" if i == 0 else "itl"))
    return gaps


def _events(gaps: list[tuple[float, float, int, str]], stall_s: float) -> list[dict[str, Any]]:
    """Merge overlapping long gaps into stall events."""
    long = sorted(g for g in gaps if g[1] - g[0] > stall_s)
    events: list[dict[str, Any]] = []
    for s, e, idx, kind in long:
        if events and s < events[-1]["end_s"]:
            ev = events[-1]
            ev["end_s"] = max(ev["end_s"], e)
            ev["requests"].add(idx)
            ev["kinds"].add(kind)
        else:
            events.append({"start_s": s, "end_s": e, "requests": {idx}, "kinds": {kind}})
    return events


def _window(samples: list[dict[str, Any]], t0: float, t1: float) -> tuple[dict[str, Any], dict[str, Any]] | None:
    sel = [s for s in samples if t0 <= s["t"] <= t1]
    if len(sel) < 2:
        return None
    return sel[0], sel[-1]


def _engine_delta(a: dict[str, Any], b: dict[str, Any], name: str) -> dict[str, Any] | None:
    ea, eb = a["eng"].get(name), b["eng"].get(name)
    if ea is None or eb is None:
        return None
    wall = b["t"] - a["t"]
    return {"cpu_share": round((eb["cpu_s"] - ea["cpu_s"]) / max(wall, 1e-9), 3),
            "majflt": eb["majflt"] - ea["majflt"], "minflt": eb["minflt"] - ea["minflt"],
            "rss_mib": [round(ea.get("rss_mib", 0.0), 1), round(eb.get("rss_mib", 0.0), 1)]}


def _core_delta(a: dict[str, Any], b: dict[str, Any], core: str) -> dict[str, float]:
    ca, cb = a["cpu"][core], b["cpu"][core]
    wall = max(b["t"] - a["t"], 1e-9)
    d = [(y - x) / wall for x, y in zip(ca, cb, strict=True)]
    return {"user": round(d[0], 3), "nice": round(d[1], 3), "system": round(d[2], 3), "idle": round(d[3], 3),
            "iowait": round(d[4], 3), "steal": round(d[5], 3)}


def analyse_pass(records: list[dict[str, Any]], samples: list[dict[str, Any]], t_start: float,
                 stall_s: float) -> dict[str, Any]:
    """Stall events of one pass and, per event, what the engines, their cores and the kernel did."""
    events = _events(_streams(records), stall_s)
    engines = sorted({k for s in samples for k in s["eng"]})
    out_events = []
    stalled_time: dict[str, float] = {e: 0.0 for e in engines}
    for ev in events:
        w = _window(samples, t_start + ev["start_s"], t_start + ev["end_s"])
        row: dict[str, Any] = {"start_s": round(ev["start_s"], 2), "dur_s": round(ev["end_s"] - ev["start_s"], 2),
                               "requests": len(ev["requests"]), "kinds": sorted(ev["kinds"])}
        if w is not None:
            a, b = w
            per = {e: _engine_delta(a, b, e) for e in engines}
            row["engines"] = per
            states = {e: "".join(s["eng"][e]["state"] for s in samples
                                 if t_start + ev["start_s"] <= s["t"] <= t_start + ev["end_s"] and s["eng"].get(e))
                      for e in engines}
            row["states"] = states
            row["cores"] = {c: _core_delta(a, b, c) for c in sorted(a["cpu"])}
            row["vm"] = {k: b["vm"][k] - a["vm"][k] for k in a["vm"]}
            live = [e for e in engines if per[e] is not None and (e.startswith("worker")
                                                                  or not any(k.startswith("worker") for k in engines))]
            if live:
                row["stalled_engine"] = min(live, key=lambda e: per[e]["cpu_share"])
                stalled_time[row["stalled_engine"]] += ev["end_s"] - ev["start_s"]
        out_events.append(row)
    a, b = samples[0], samples[-1]
    totals = {"wall_s": round(b["t"] - a["t"], 1),
              "engines": {e: _engine_delta(a, b, e) for e in engines},
              "cores": {c: _core_delta(a, b, c) for c in sorted(a["cpu"])},
              "vm": {k: b["vm"][k] - a["vm"][k] for k in a["vm"]}}
    ttft = sorted(r["ttft_s"] for r in records if r.get("ttft_s") is not None)
    tpot = sorted(r["tpot_s"] for r in records if r.get("tpot_s") is not None)

    def pct(v: list[float], q: float) -> float | None:
        return round(v[min(len(v) - 1, int(q * len(v)))], 4) if v else None

    return {"requests": len(records), "ttft_p50_s": pct(ttft, 0.5), "ttft_p99_s": pct(ttft, 0.99),
            "tpot_p50_s": pct(tpot, 0.5), "tpot_p99_s": pct(tpot, 0.99),
            "stall_events": len(out_events), "stalled_s": round(sum(e["dur_s"] for e in out_events), 2),
            "stall_majflt": sum((e.get("engines") or {}).get(e.get("stalled_engine", ""), {}).get("majflt", 0)
                                if e.get("stalled_engine") else 0 for e in out_events),
            "totals": totals, "events": out_events}


def stored_runs(runs_json: Path, stall_s: float) -> dict[str, Any]:
    """Stall events of stored replays (``runs.json`` of ``bench/fidelity_real_runs.py``), no engines needed:
    per load, each event's start (s into the run), duration (s) and requests, and how many events
    start at the same run time (+-2 s) in every load (the loads thin one trace, so a stall driven
    by the trace's bursts recurs at the same time; one of a first-seen shape or a machine event does not)."""
    meta = json.loads(runs_json.read_text())
    per: dict[str, list[dict[str, Any]]] = {}
    for run in meta["runs"]:
        lines = (runs_json.parent / run["records"]).read_text().splitlines()
        records = [r for r in (json.loads(x) for x in lines) if "index" in r]
        per[run["records"]] = [{"start_s": round(e["start_s"], 2), "dur_s": round(e["end_s"] - e["start_s"], 2),
                                "requests": len(e["requests"])} for e in _events(_streams(records), stall_s)]
    names = list(per)
    recurring = [e for e in per[names[0]]
                 if all(any(abs(f["start_s"] - e["start_s"]) <= 2.0 for f in per[n]) for n in names[1:])]
    return {"runs": os.path.relpath(runs_json, ROOT), "events": per,
            "events_recurring_in_all_loads": [e["start_s"] for e in recurring]}


def add_simulation(result: Path, config: str) -> dict[str, Any]:
    """Simulate every pass of a written result on the same static deployment (the profile table as
    measured, prefill-only iterations at ``prefill_s``: setting ``serving`` of ``bench/sim_fidelity_loads.py``
    without fitted contention) and store real vs simulated TTFT p50/p99, TPOT mean/p99 and SLO
    attainment per pass under ``sim``; returns the updated result."""
    import importlib.util

    from oserve.compose.simulation import load_table
    from oserve.sim.config import ContentionConfig, load_config
    from oserve.sim.fidelity import compare_load, load_metrics, load_replay, replay_to_records

    spec = importlib.util.spec_from_file_location("sim_fidelity_loads", ROOT / "bench/sim_fidelity_loads.py")
    assert spec is not None and spec.loader is not None
    sfl = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sfl)
    doc = json.loads(result.read_text())
    cfg = load_config(config)
    n = int(doc.get("replicas", 2))
    if n < len(cfg.deployment):
        node = cfg.cluster.nodes[0].model_copy(update={"devices": n})
        cfg = cfg.model_copy(update={"deployment": cfg.deployment[:n],
                                     "cluster": cfg.cluster.model_copy(update={"nodes": [node]})})
    table = load_table(cfg)
    for p in doc["passes"]:
        if "records" not in p:
            continue
        records, _ = load_replay(ROOT / p["records"])
        real = load_metrics(replay_to_records(records), slo_ttft_s=SLO["ttft"], slo_tpot_s=SLO["tpot"])
        sim = sfl._simulate(records, cfg, table, "static:smollm2-135m-fp32-1c-s32", SLO, ContentionConfig(), "a")
        cmp = compare_load(real, sim)
        p["sim"] = {k: {kk: (round(vv, 4) if isinstance(vv, float) else vv) for kk, vv in v.items()}
                    for k, v in cmp.items()
                    if k in ("slo_attainment", "ttft_p50_s", "ttft_p99_s", "tpot_mean_s", "tpot_p99_s")}
    doc["sim_config"] = config
    result.write_text(json.dumps(doc, indent=1))
    return doc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "examples/cpu-smollm2.yaml"))
    ap.add_argument("--rate-factor", type=float, default=0.1)
    ap.add_argument("--end-s", type=float, default=720.0, help="Azure window [480, END) s, time-compressed 2x")
    ap.add_argument("--passes", default="run,run,idle75,run", help="comma list of 'run' and 'idleN' (N seconds)")
    ap.add_argument("--prime", default=None, metavar="N,PROMPT,OUT",
                    help="before the first pass, send N requests at once per replica of PROMPT prompt tokens and "
                         "OUT output tokens (e.g. 32,300,16: the replicas' largest batch) and wait for them")
    ap.add_argument("--fresh-prompts", action="store_true",
                    help="pass i builds its prompts with seed i (same lengths and times, different tokens), so no "
                         "pass is served from the prefix cache a previous pass filled; default: identical prompts")
    ap.add_argument("--replicas", type=int, default=2, help="replicas of the static deployment (1 or 2)")
    ap.add_argument("--sample-s", type=float, default=0.1, help="sampling period, s")
    ap.add_argument("--stall-s", type=float, default=0.7, help="a stream gap longer than this is a stall, s")
    ap.add_argument("--out", default=str(ROOT / "bench/results/stall_probe.json"))
    ap.add_argument("--note", default="")
    ap.add_argument("--add-sim", default=None, help="simulate the passes of this written result (no engines) and "
                    "add real vs simulated latency per pass to it; --sim-config names the simulator config")
    ap.add_argument("--sim-config", default=str(ROOT / "examples/sim-cpu-demo.yaml"))
    ap.add_argument("--stored", default=None,
                    help="only analyse stored replays (a runs.json), start no engine; prints JSON")
    args = ap.parse_args()
    if args.add_sim:
        doc = add_simulation(Path(args.add_sim), args.sim_config)
        for p in doc["passes"]:
            if "sim" in p:
                print(p["pass"], p["index"], {k: (v["real"], v["simulated"], v["relative_error"]) for k, v in p["sim"].items()})
        return 0
    if args.stored:
        print(json.dumps(stored_runs(Path(args.stored), args.stall_s), indent=1))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    import psutil
    from fidelity_real_runs import static_stack_config

    from oserve.cli.demo import build_demo_trace
    from oserve.compose import resolve_model_path
    from oserve.testing.stack_thread import StackThread
    from oserve.workload.replay import replay

    out = Path(args.out)
    rec_dir = out.parent / (out.stem + "_runs")
    rec_dir.mkdir(parents=True, exist_ok=True)
    cfg = static_stack_config(args.config, args.replicas)
    model_path = resolve_model_path(cfg)
    trace = build_demo_trace(rate_factor=args.rate_factor, end_s=args.end_s)
    passes: list[dict[str, Any]] = []
    affinity: dict[str, Any] = {}
    priming: dict[str, Any] | None = None
    t0 = time.monotonic()
    with StackThread(cfg) as st:
        engines = _engine_processes()
        affinity = {}
        for k, pid in engines.items():
            try:
                affinity[k] = psutil.Process(pid).cpu_affinity()
            except psutil.Error:
                affinity[k] = None
        logging.info("stack up in %.1f s; engine processes %s", time.monotonic() - t0, engines)
        if args.prime:
            import numpy as np

            from oserve.workload.trace import Trace

            n, plen, olen = (int(x) for x in args.prime.split(","))
            n *= args.replicas
            prime = Trace(arrival_s=np.zeros(n), input_tokens=np.full(n, plen), output_tokens=np.full(n, olen),
                          name=f"prime-{n}x{plen}+{olen}")
            t_p = time.monotonic()
            asyncio.run(replay(prime, st.url, cfg.model.served_name, tokenizer=model_path, timeout_s=300,
                               scheme=cfg.classes.to_scheme()))
            priming = {"requests": n, "prompt_tokens": plen, "output_tokens": olen,
                       "wall_s": round(time.monotonic() - t_p, 1),
                       "worker_rss_mib": {k: (_proc_stat(pid) or {}).get("rss_mib") for k, pid in engines.items()}}
            logging.info("primed: %s", priming)
        for i, p in enumerate(args.passes.split(",")):
            if p.startswith("idle"):
                time.sleep(float(p[4:]))
                passes.append({"pass": p})
                continue
            before = [round(x, 2) for x in os.getloadavg()]
            sampler = Sampler(engines, args.sample_s)
            time.sleep(2 * args.sample_s)
            t_start = time.monotonic()
            result = asyncio.run(replay(trace, st.url, cfg.model.served_name, tokenizer=model_path, slo=SLO,
                                        scheme=cfg.classes.to_scheme(), timeout_s=300,
                                        seed=1000 * i if args.fresh_prompts else 0))
            samples = sampler.stop()
            path = rec_dir / f"pass{i}-{p}.jsonl"
            result.write(path)
            records = [json.loads(line) for line in path.read_text().splitlines()]
            records = [r for r in records if "index" in r]
            row = {"pass": p, "index": i, "records": os.path.relpath(path, ROOT), "loadavg_before": before,
                   "loadavg_after": [round(x, 2) for x in os.getloadavg()],
                   **analyse_pass(records, samples, t_start, args.stall_s)}
            passes.append(row)
            logging.info("pass %d %s: %d stall events, %.1f s stalled, majflt in stalls %d, TTFT p99 %.2f s",
                         i, p, row["stall_events"], row["stalled_s"], row["stall_majflt"], row["ttft_p99_s"] or -1)
    doc = {"command": "python bench/stall_probe.py " + " ".join(os.sys.argv[1:]),
           "what": __doc__.splitlines()[0], "note": args.note,
           "machine": "2-core AMD EPYC Zen 4 (avx512 bf16/vnni), 24 GiB, no GPU, Firecracker VM; vLLM-CPU 0.32",
           "trace": trace.name, "rate_factor": args.rate_factor, "replicas": args.replicas,
           "fresh_prompts": args.fresh_prompts, "requests_per_pass": len(trace),
           "engines": engines, "affinity": affinity, "priming": priming, "sample_s": args.sample_s, "stall_s": args.stall_s,
           "finished_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()), "passes": passes}
    out.write_text(json.dumps(doc, indent=1))
    for p in passes:
        print({k: p.get(k) for k in ("pass", "stall_events", "stalled_s", "stall_majflt", "ttft_p99_s", "tpot_p99_s")})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
