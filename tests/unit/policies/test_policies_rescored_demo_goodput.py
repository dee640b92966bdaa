"""The planner never trades goodput for quality on the demo's CPU table (fp32 quality 1, int8 W8A8 0.874),
recomputed at the demo's class lengths: the MILP plan (with its pooling search) carries at least the
best single-variant plan's goodput for random demands, from idle to 4x what 2 x int8 carries."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from oserve.config import load_config
from oserve.policies import make_planner
from oserve.policies.evaluate import evaluate
from oserve.profiles.rescore import rescore_table
from oserve.profiles.table import ProfileTable
from oserve.types import Demand

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("seed", range(4))
def test_milp_plan_carries_at_least_the_best_single_variant_plan_on_the_rescored_demo_table(seed: int) -> None:
    cfg = load_config(ROOT / "examples" / "demo-cpu-precision.yaml")
    assert cfg.orchestrator is not None
    table = rescore_table(ProfileTable.load(cfg.resolve(cfg.orchestrator.table)), cfg.classes.to_scheme(),
                          cfg.orchestrator.slo)
    assert len({row.quality_score for row in table.variants.values()}) == 2  # the quality trade is on the table
    cluster, milp = cfg.cluster_spec, make_planner("milp")
    rng = np.random.default_rng(seed)
    for _ in range(10):
        scale = float(rng.choice([0.5, 2.0, 5.0, 10.0, 20.0, 40.0]))
        demand = Demand(rates_rps={c: float(rng.uniform(0, scale)) * float(rng.random() > 0.3)
                                   for c in table.class_names})
        carried = evaluate(milp.plan(cluster, table, demand), cluster, table, demand).goodput_rps
        best = max(evaluate(make_planner("static", variant=v).plan(cluster, table, demand), cluster, table,
                            demand).goodput_rps for v in table.variants)
        assert carried >= best * (1 - 1e-6), (demand.rates_rps, carried, best)
