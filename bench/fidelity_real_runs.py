"""Real replays for the simulator-fidelity bench: one Azure slice at three rate scales on real vLLM-CPU.

Serves the demo's Azure 2023 slice (:func:`oserve.cli.demo.build_demo_trace`, window [480, 720) s,
time-compressed 2x, tokens scaled for SmolLM2) with a static deployment of real vLLM-CPU replicas
(``examples/cpu-smollm2.yaml``: 2 x fp32, one core each, behind oserve's endpoint, server and load
generator on the same 2 cores, as the demo runs) at several thinning factors (``--rate-factors``),
one after another on one running stack. Writes per load ``OUT/records-rf{factor}.jsonl`` (per-request
records and the summary) and ``OUT/runs.json`` (rate, requests, ``uptime`` load average before and
after each load). ``bench/sim_fidelity_loads.py --runs OUT/runs.json`` then simulates the same requests.

With ``--profile-config`` (e.g. ``examples/profile-cpu-demo.yaml``) the variants are then profiled on this
machine, with the stack stopped (``oserve profile`` -> ``OUT/profile.json``), and ``OUT/sim-config.yaml`` is
written: ``--sim-config`` with its ``table`` pointed at that profile. The simulator then models the machine
the replays ran on: these 2-core VMs differ in speed (2026-12-02: fp32 prefill of 512 tokens 1.47 s against
the shipped table's 1.28 s, a batch-1 decode step 0.065 s against 0.052 s by the fitted tables), and a table from another machine
put TTFT p50 25% off where this one's put it 3% off (docs/simulator.md).

    .venv/bin/python bench/fidelity_real_runs.py --rate-factors 0.03,0.06,0.10 --out out/fidelity \
        --profile-config examples/profile-cpu-demo.yaml
    .venv/bin/python bench/sim_fidelity_loads.py --runs out/fidelity/runs.json --config out/fidelity/sim-config.yaml
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


def _loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


class _LoadSampler:
    """Samples the 1-min load average every 5 s while a load runs."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.wait(5.0):
            self.samples.append(os.getloadavg()[0])

    def stop(self) -> dict[str, float | None]:
        self._stop.set()
        self._t.join(timeout=6)
        s = self.samples
        return {"mean": round(sum(s) / len(s), 2) if s else None, "max": round(max(s), 2) if s else None}


def _wait_quiet(max_load: float, max_wait_s: float) -> float:
    """Sleep until the 1-min load average is below ``max_load`` or ``max_wait_s`` passed; returns the wait, s."""
    t0 = time.monotonic()
    while os.getloadavg()[0] >= max_load and time.monotonic() - t0 < max_wait_s:
        time.sleep(5)
    return round(time.monotonic() - t0, 1)


def static_stack_config(config_path: str, replicas: int) -> Any:
    """The config's first ``replicas`` replicas, no orchestrator, on a free local port (a static stack to replay on).

    Also points the demo module at this checkout's traces. Exits (``SystemExit``) naming the allowed range when
    ``replicas`` is outside [1, replicas in the config].
    """
    import oserve.cli.demo as demo
    from oserve.config import load_config

    demo.TRACES = ROOT / "data" / "traces" / "azure_llm_2023"  # the demo module looks under oserve/
    config = load_config(config_path, overrides={"server": {"host": "127.0.0.1", "port": 0}})
    if not 1 <= replicas <= len(config.deployment):
        raise SystemExit(f"--replicas must be in [1, {len(config.deployment)}]")
    return config.model_copy(update={"orchestrator": None, "deployment": config.deployment[:replicas]})


def read_sim_template(template: str | Path) -> dict[str, Any]:
    """The simulator config ``template`` as a mapping.

    Raises:
        SystemExit: unreadable, not YAML, or no top-level ``table`` (not a simulator config).
    """
    import yaml

    try:
        cfg = yaml.safe_load(Path(template).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise SystemExit(f"--sim-config {template}: cannot read it ({exc})") from exc
    if not isinstance(cfg, dict) or "table" not in cfg:
        raise SystemExit(f"--sim-config {template}: not a simulator config (no top-level 'table')")
    return cfg


def write_sim_config(template: str | Path, table: str | Path, out: str | Path) -> Path:
    """Write ``out``: the simulator config ``template`` (YAML) with its ``table`` set to ``table``.

    ``table`` is written relative to ``out``'s folder when it lies under it (the config resolves relative
    paths against its own folder), else absolute; the template's ``trace.paths`` are made absolute.

    Raises:
        SystemExit: ``template`` unreadable or not a simulator config (no top-level ``table``).
    """
    import yaml

    cfg = read_sim_template(template)
    out, table = Path(out), Path(table).resolve()
    trace = cfg.get("trace")
    if isinstance(trace, dict) and trace.get("paths"):  # relative to the template's folder, not OUT's
        trace["paths"] = [str((Path(template).parent / p).resolve()) for p in trace["paths"]]
    try:
        cfg["table"] = str(table.relative_to(out.parent.resolve()))
    except ValueError:
        cfg["table"] = str(table)
    out.write_text(f"# {Path(template).name} with the table profiled on the replays' machine "
                   f"(bench/fidelity_real_runs.py)\n" + yaml.safe_dump(cfg, sort_keys=False))
    return out


def machine_description() -> str:
    """This machine as read now (CPU identity, memory), e.g. for ``runs.json``: VMs of one name differ."""
    from oserve.profiles.cpu_info import current_cpu

    cpu = current_cpu()
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{cpu.logical_cpus}-core {cpu.vendor} {cpu.model} (family {cpu.family}; {' '.join(cpu.flags)}), "
            f"{mem_gib:.0f} GiB; vLLM-CPU")


def _speed() -> dict | None:
    from oserve.profiles.cpu_speed import measure_cpu_speed

    return measure_cpu_speed().model_dump()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "examples/cpu-smollm2.yaml"))
    ap.add_argument("--rate-factors", default="0.03,0.06,0.10", help="thinning factors of the Azure slice")
    ap.add_argument("--end-s", type=float, default=720.0,
                    help="end of the Azure window [480, END) s (time-compressed 2x: 720 -> 120 s per load)")
    ap.add_argument("--replicas", type=int, default=2, help="replicas of the static deployment (1 or 2)")
    ap.add_argument("--out", default="out/fidelity")
    ap.add_argument("--max-load", type=float, default=4.0,
                    help="wait before each load until the 1-min load average (the stack idle) is below this")
    ap.add_argument("--max-wait-s", type=float, default=300.0, help="give up waiting after this long, s")
    ap.add_argument("--profile-config", default=None,
                    help="after the loads, profile the variants on this machine with this profile config "
                         "(OUT/profile.json) and write OUT/sim-config.yaml")
    ap.add_argument("--sim-config", default=str(ROOT / "examples/sim-cpu-demo.yaml"),
                    help="with --profile-config: the simulator config OUT/sim-config.yaml copies")
    args = ap.parse_args()
    if args.profile_config:  # refused before the loads, not after them
        if not Path(args.profile_config).is_file():
            ap.error(f"--profile-config {args.profile_config}: no such file")
        read_sim_template(args.sim_config)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("vllm", "httpx", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    from oserve.cli.demo import build_demo_trace
    from oserve.compose import resolve_model_path
    from oserve.testing.stack_thread import StackThread
    from oserve.workload.replay import replay

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = static_stack_config(args.config, args.replicas)
    model_path = resolve_model_path(cfg)
    runs = []
    t_start = time.monotonic()
    with StackThread(cfg) as st:
        logging.info("stack up in %.1f s", time.monotonic() - t_start)
        for rf in (float(x) for x in args.rate_factors.split(",")):
            trace = build_demo_trace(rate_factor=rf, end_s=args.end_s)
            waited = _wait_quiet(args.max_load, args.max_wait_s)
            before = _loadavg()
            t0 = time.monotonic()
            sampler = _LoadSampler()
            result = asyncio.run(replay(trace, st.url, cfg.model.served_name, tokenizer=model_path, slo=SLO,
                                        scheme=cfg.classes.to_scheme(), timeout_s=300))
            during = sampler.stop()
            path = out_dir / f"records-rf{rf:g}.jsonl"
            result.write(path)
            s = result.summary
            runs.append({"rate_factor": rf, "records": path.name, "requests": len(trace),
                         "offered_rps": len(trace) / max(trace.duration_s, 1e-9),
                         "wall_s": time.monotonic() - t0, "waited_for_quiet_s": waited, "loadavg_before": before, "loadavg_after": _loadavg(),
                         "loadavg1_during": during,
                         "throughput_rps": s["request_throughput"], "slo_attainment": s["slo_attainment"],
                         "trace": trace.name, "trace_meta": trace.meta})
            logging.info("rf %.3f: %s", rf, runs[-1])
            time.sleep(5)
    meta = {"config": args.config, "replicas": args.replicas,
            "deployment": [p.model_dump() for p in cfg.deployment], "slo": SLO,
            "machine": machine_description(), "cpu_speed": _speed(),
            "runs": runs}
    (out_dir / "runs.json").write_text(json.dumps(meta, indent=1, default=str))
    print(json.dumps(runs, indent=1, default=str))
    if args.profile_config:  # the stack is stopped: the profile has the machine to itself
        from oserve.cli import main as oserve_main

        profile = out_dir / "profile.json"
        rc = oserve_main(["profile", args.profile_config, "-o", str(profile), "--no-progress"])
        if rc != 0:
            logging.error("oserve profile exited %s; no sim-config written", rc)
            return rc
        logging.info("wrote %s", write_sim_config(args.sim_config, profile, out_dir / "sim-config.yaml"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
