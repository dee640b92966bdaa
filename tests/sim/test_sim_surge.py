"""Surge checks and migrating drains in the simulator: the live orchestrator's rules on simulated time
(shipped CPU example, examples/sim-cpu-smollm2.yaml)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from oserve.compose.simulation import load_table, run_policy
from oserve.config import SurgeConfig
from oserve.sim.config import load_config
from oserve.sim.policies import parse_policy
from oserve.types import ReplicaPlacement
from oserve.workload.trace import Trace

ROOT = Path(__file__).resolve().parents[2]
VARIANT = "smollm2-135m-fp32-1c-s32"
BURST_S = 61.0


def _run(surge: SurgeConfig | None, migrate: bool = False):
    cfg = load_config(ROOT / "examples" / "sim-cpu-smollm2.yaml")
    one = [ReplicaPlacement(variant=VARIANT, node="node0", device_ids=(0,))]
    control = cfg.control.model_copy(update={"interval_s": 30.0, "surge": surge, "migrate_on_drain": migrate})
    cfg = cfg.model_copy(update={"deployment": one, "control": control, "sample_interval_s": 1.0})
    rng = np.random.default_rng(7)
    light = np.sort(rng.uniform(0, BURST_S, rng.poisson(1.0 * BURST_S)))
    burst = np.sort(BURST_S + rng.uniform(0, 40.0, rng.poisson(8.0 * 40.0)))
    a = np.concatenate([light, burst])
    trace = Trace(a, np.full(a.size, 64), np.full(a.size, 12))
    return run_policy(parse_policy("oserve"), trace, load_table(cfg), cfg.cluster.spec(), cfg.classes.to_scheme(),
                      cfg)


def _first_scale_up_s(run) -> tuple[float, str]:
    d = next(d for d in run.result.decisions if d["time_s"] > BURST_S - 1 and d["changed"])
    return d["time_s"], d["reason"]


def test_a_burst_is_decided_within_seconds_with_surge_checks_and_at_the_next_tick_without():
    t_off, reason_off = _first_scale_up_s(_run(None))
    assert t_off >= 90.0 and not reason_off.startswith("surge")  # the next 30-s tick
    run = _run(SurgeConfig(window_s=3, min_arrivals=8))
    t_on, reason_on = _first_scale_up_s(run)
    assert BURST_S < t_on <= BURST_S + 5.0 and reason_on.startswith("surge:"), (t_on, reason_on)
    # no surge decision in the light traffic before the burst
    assert not any(d["reason"].startswith("surge") for d in run.result.decisions if d["time_s"] < BURST_S)


def _scale_down_run(migrate: bool, grace_s: float = 0.0):
    """2 replicas, a 40-s burst then 1.1 req/s for 6 minutes: the planner drains one replica while
    requests run on it; a 0.2-s drain timeout aborts what has not finished unless it migrates."""
    cfg = load_config(ROOT / "examples" / "sim-cpu-smollm2.yaml")
    two = [ReplicaPlacement(variant=VARIANT, node="node0", device_ids=(i,)) for i in (0, 1)]
    cfg = cfg.model_copy(update={"deployment": two,
                                 "control": cfg.control.model_copy(update={"migrate_on_drain": migrate,
                                                                           "migration_grace_s": grace_s}),
                                 "switching": cfg.switching.model_copy(update={"drain_timeout_s": 0.2})})
    rng = np.random.default_rng(5)
    a = np.sort(np.concatenate([rng.uniform(0, 40, 200), rng.uniform(40, 400, 400)]))
    trace = Trace(a, np.full(a.size, 64), np.full(a.size, 48))
    return run_policy(parse_policy("oserve"), trace, load_table(cfg), cfg.cluster.spec(), cfg.classes.to_scheme(),
                      cfg)


def test_migrating_drains_move_in_flight_requests_instead_of_aborting_them():
    plain = _scale_down_run(False)
    assert any(t["drained"] for t in plain.result.transitions)
    assert plain.summary["aborted"] > 0  # the drain timeout cut requests off (measured: 3 of 600)
    moved = _scale_down_run(True)
    assert [t["drained"] for t in moved.result.transitions] == [t["drained"] for t in plain.result.transitions]
    assert moved.summary["aborted"] == 0 and moved.summary["completed"] == moved.summary["requests"] == 600


def test_a_migration_grace_lets_short_requests_finish_in_place():
    at_once = _scale_down_run(True)
    graced = _scale_down_run(True, grace_s=5.0)
    moved_at_once = sum(t["migrated_requests"] for t in at_once.result.transitions)
    moved_graced = sum(t["migrated_requests"] for t in graced.result.transitions)
    assert moved_at_once > 0
    assert moved_graced < moved_at_once, (moved_graced, moved_at_once)  # 48-token decodes (about 3 s here) finish within 5 s
    for run in (at_once, graced):
        assert run.summary["aborted"] == 0 and run.summary["completed"] == run.summary["requests"] == 600
