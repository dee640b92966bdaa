"""The demo's control loop (examples/sim-cpu-demo.yaml: rescored table, 20-s scale-down window) goes to int8 for a
burst and, once demand drops to zero, returns both cores to fp32 within the window plus two ticks and stays there."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from oserve.compose.simulation import build_controller, load_table
from oserve.sim.config import load_config

FP32, INT8 = "smollm2-135m-fp32-1c-s32", "smollm2-135m-int8-1c-s32"


def test_zero_demand_after_a_peak_returns_to_fp32_and_stays() -> None:
    cfg = load_config("examples/sim-cpu-demo.yaml")
    scheme, cluster = cfg.classes.to_scheme(), cfg.cluster.spec()
    ctl = build_controller(cfg, cluster, load_table(cfg), scheme)
    names, tick = list(scheme.names), cfg.control.interval_s
    current = cfg.initial_plan()
    ts: list[float] = []
    rates: list[np.ndarray] = []
    seen: list[dict[str, int]] = []
    for step in range(36):  # 40 s calm, 20 s burst (14 req/s, 2.7x 2 x fp32), then 120 s of nothing
        r = np.array([0.5, 0.1, 0.2, 0.05]) if step < 8 else np.array([3.0, 1.0, 8.0, 2.0]) if step < 12 \
            else np.zeros(len(names))
        ts.append(step * tick)
        rates.append(r)
        current = ctl.tick(step * tick, SimpleNamespace(class_names=names, arrival_rates_rps=r), np.array(ts),
                           np.array(rates), current).plan
        seen.append(current.replica_counts())
    assert seen[7] == {FP32: 2} and seen[11] == {INT8: 2}
    back = next(i for i in range(12, 36) if seen[i] == {FP32: 2})
    assert (back - 11) * tick <= cfg.control.hysteresis.scale_down_window_s + 2 * tick, seen
    assert all(s == {FP32: 2} for s in seen[back:]), seen
