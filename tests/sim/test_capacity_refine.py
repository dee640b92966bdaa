"""Refining a finished capacity search (oserve.compose.capacity_refine) and restating a study's ratios."""

from __future__ import annotations

import numpy as np
import pytest

from oserve.compose.capacity import bisect_scale, find_capacity
from oserve.compose.capacity_refine import bracket_of, refine_capacity, restate_study
from oserve.errors import ConfigError
from oserve.sim.config import SimConfig
from oserve.testing.tables import GIB, synthetic_table
from oserve.types import DEFAULT_SCHEME, ClusterSpec
from oserve.workload.trace import Trace


def _falling(knee: float):
    return lambda s: 1.0 if s <= knee else max(0.0, 1.0 - (s - knee))


def test_bisection_from_a_coarse_search_s_bracket_probes_what_a_fine_search_would() -> None:
    coarse = bisect_scale(_falling(3.3), target=0.9, start=1.0, rel_tol=0.2)
    fine = bisect_scale(_falling(3.3), target=0.9, start=1.0, rel_tol=0.01)
    bracket = bracket_of(coarse.probes, 0.9)
    assert bracket is not None and bracket[1] / bracket[0] > 1.01
    more = bisect_scale(_falling(3.3), target=0.9, rel_tol=0.01, bracket=bracket)
    assert coarse.probes + more.probes == fine.probes  # the same scales, in the same order
    assert more.scale == fine.scale
    with pytest.raises(ConfigError) as e:
        bisect_scale(_falling(3.3), bracket=(2.0, 1.0))
    assert e.value.field == "bracket"


def test_bracket_of_needs_a_met_scale_and_a_missed_one_above_it() -> None:
    assert bracket_of([[1.0, 0.95], [2.0, 0.5], [1.4, 0.91], [1.7, 0.8]], 0.9) == (1.4, 1.7)
    assert bracket_of([[1.0, 0.95], [2.0, 0.96]], 0.9) is None  # capped: nothing missed above
    assert bracket_of([[1.0, 0.5]], 0.9) is None  # floored


def test_refining_a_simulated_search_equals_searching_finely_from_the_start() -> None:
    names = DEFAULT_SCHEME.names
    table = synthetic_table({"small": {c: 2.0 for c in names}}, {"small": 1}, memory_per_device_bytes=60 * GIB,
                            class_names=names)
    cluster = ClusterSpec.homogeneous(1, 2, "a100-80gb", 60 * GIB)
    rng = np.random.default_rng(3)
    arr = np.sort(rng.uniform(0, 120.0, 360))
    trace = Trace(arr - arr[0], rng.integers(100, 600, 360), rng.integers(10, 120, 360), name="poisson")
    cfg = SimConfig(table="synthetic")
    coarse = find_capacity("static:small", trace, table, cluster, DEFAULT_SCHEME, cfg, rel_tol=0.3)
    fine = find_capacity("static:small", trace, table, cluster, DEFAULT_SCHEME, cfg, rel_tol=0.05)
    assert len(fine.probes) > len(coarse.probes)
    refined = refine_capacity("static:small", [[p.scale, p.attainment] for p in coarse.probes], trace, table,
                              cluster, DEFAULT_SCHEME, cfg, target=0.9, rel_tol=0.05)
    assert refined is not None
    assert refined.capacity_scale == fine.capacity_scale
    assert [(p.scale, p.attainment) for p in refined.probes] == [(p.scale, p.attainment) for p in fine.probes]
    # already within the tolerance: nothing to do
    assert refine_capacity("static:small", [[p.scale, p.attainment] for p in fine.probes], trace, table, cluster,
                           DEFAULT_SCHEME, cfg, target=0.9, rel_tol=0.05) is None


def test_restated_study_reports_the_lp_bound_oracle_and_the_simulated_one_side_by_side() -> None:
    def row(policy: str, scale: float) -> dict:
        return {"policy": policy, "variant": None, "capacity_scale": scale}

    # Llama-2-70B conv's shape: the LP bound above every simulated plan, the window oracle above the fixed ones
    study = {"mean_rate_rps": 2.0, "summary": {},
             "rows": [row("plain-vllm", 3.0), row("static:a", 6.0), row("static-mix", 6.2), row("oserve:milp", 6.3),
                      row("oracle", 6.8), row("window-oracle", 6.5)],
             "oracle": {"scale": 6.8, "window_bound_scale": 6.8, "window_oracle": {"scale": 6.5}}}
    restate_study(study)
    by = {r["policy"]: r for r in study["rows"]}
    s = study["summary"]
    assert s["oracle_scale"] == by["oracle"]["capacity_scale"] == 6.8 and study["oracle"]["floored_by"] is None
    assert s["oracle_fraction"]["oserve:milp"] == pytest.approx(6.3 / 6.8)
    assert s["simulated_oracle_scale"] == 6.5
    assert s["simulated_oracle_fraction"]["oserve:milp"] == pytest.approx(6.3 / 6.5)
    assert s["best_static"] == "static-mix" and by["oserve:milp"]["vs_best_static"] == pytest.approx(6.3 / 6.2)
    assert by["oserve:milp"]["capacity_rps"] == pytest.approx(12.6) and by["oserve:milp"]["vs_plain"] == 2.1
    # a fixed plan above the LP bound floors it; a window oracle above both raises it
    study["rows"][2]["capacity_scale"] = 7.0
    study["oracle"]["window_oracle"]["scale"] = 7.2
    restate_study(study)
    assert study["oracle"]["without_window_oracle"] == {"scale": 7.0, "floored_by": "static-mix"}
    assert study["summary"]["oracle_scale"] == 7.2 and study["oracle"]["floored_by"] == "window-oracle"


def test_refined_static_rows_recalibrate_the_lp_bound_as_a_fine_study_computes_it() -> None:
    # the LP bound is calibrated by the simulated static capacities (sound_oracle): refining the static rows
    # must move it to where a study searched at the fine tolerance puts it
    from oserve.compose.capacity import capacity_study
    from oserve.compose.capacity_refine import recalibrate_lp_bound

    names = DEFAULT_SCHEME.names
    caps = {"small": {c: 3.0 for c in names}, "big": {c: 5.0 for c in names}}
    table = synthetic_table(caps, {"small": 1, "big": 2}, memory_per_device_bytes=60 * GIB, class_names=names)
    table = table.model_copy(update={"variants": {
        k: v.model_copy(update={"kv_cache_bytes": 60 * GIB * v.devices_per_replica // 2})
        for k, v in table.variants.items()}})
    cluster = ClusterSpec.homogeneous(1, 2, "a100-80gb", 60 * GIB)
    rng = np.random.default_rng(2)
    arr = np.sort(rng.uniform(0, 120.0, 360))
    trace = Trace(arr - arr[0], rng.integers(100, 600, 360), rng.integers(10, 120, 360), name="poisson")
    cfg = SimConfig(table="synthetic")
    policies = ["plain-vllm", "static:small", "static:big"]

    def study(rel_tol: float) -> dict:
        return capacity_study(trace, table, cluster, DEFAULT_SCHEME, cfg, policies=policies, rel_tol=rel_tol,
                              oracle_capacities="table", seed=0)

    coarse, fine = study(0.3), study(0.05)
    for r in coarse["rows"]:
        if r["policy"].startswith("static:"):
            res = refine_capacity(r["policy"], r["probes"], trace, table, cluster, DEFAULT_SCHEME, cfg, target=0.9,
                                  rel_tol=0.05)
            if res is not None:
                r["capacity_scale"] = res.capacity_scale
    fine_static = {r["policy"]: r["capacity_scale"] for r in fine["rows"] if r["policy"].startswith("static:")}
    assert {r["policy"]: r["capacity_scale"] for r in coarse["rows"] if r["policy"] in fine_static} == fine_static
    assert coarse["oracle"]["window_bound_scale"] != pytest.approx(fine["oracle"]["window_bound_scale"], rel=1e-3)
    recalibrate_lp_bound(coarse, trace, table, cluster, DEFAULT_SCHEME)
    assert coarse["oracle"]["window_bound_scale"] == pytest.approx(fine["oracle"]["window_bound_scale"], rel=1e-9)
def test_refined_static_scales_move_a_table_calibrated_lp_bound_with_them() -> None:
    # The table-calibrated LP bound scales each variant's table capacities by its *simulated* static capacity
    # (oserve.compose.oracle.sound_oracle), so refining static:V's capacity moves the bound. Restated with the
    # bound of the coarse scales, the oracle stayed up to rel_tol low and every oracle_fraction up to rel_tol high.
    from oserve.compose.capacity_refine import recalibrate_lp_bound
    from oserve.compose.oracle import oracle_bound, sound_oracle

    names = DEFAULT_SCHEME.names
    table = synthetic_table({"small": {c: 3.0 for c in names}, "big": {c: 5.0 for c in names}},
                            {"small": 1, "big": 2}, memory_per_device_bytes=60 * GIB, class_names=names)
    cluster = ClusterSpec.homogeneous(1, 2, "a100-80gb", 60 * GIB)
    rng = np.random.default_rng(2)
    arr = np.sort(rng.uniform(0, 240.0, 720))
    trace = Trace(arr - arr[0], rng.integers(100, 600, 720), rng.integers(10, 120, 720), name="poisson")
    tb = oracle_bound(trace, table, cluster, DEFAULT_SCHEME, window_s=60.0, target=0.9)
    coarse = {"static:small": 0.7 * tb.static_scales["small"], "static:big": 0.6 * tb.static_scales["big"]}
    b = sound_oracle(tb, trace, table, cluster, DEFAULT_SCHEME, coarse, target=0.9)
    assert b.source == "table-calibrated"

    def row(policy: str, scale: float) -> dict:
        return {"policy": policy, "variant": None, "capacity_scale": scale}

    study = {"mean_rate_rps": 3.0, "target": 0.9, "warmup_s": 0.0, "summary": {},
             "rows": [row("plain-vllm", 0.5 * b.scale), *(row(k, v) for k, v in coarse.items()),
                      row("oserve:milp", 0.9 * b.scale), row("oracle", b.scale)],
             "oracle": {"source": b.source, "scale": b.scale, "window_s": 60.0, "window_bound_scale": b.lp_scale,
                        "floored_by": None}}
    for r in study["rows"]:  # refined: every static capacity 4% up
        if r["policy"].startswith("static:"):
            r["capacity_scale"] *= 1.04
    recalibrate_lp_bound(study, trace, table, cluster, DEFAULT_SCHEME)
    restate_study(study)
    assert study["oracle"]["window_bound_scale"] == pytest.approx(1.04 * b.lp_scale, rel=1e-6)
    assert study["summary"]["oracle_scale"] == pytest.approx(1.04 * b.scale, rel=1e-6)
    assert study["summary"]["oracle_fraction"]["oserve:milp"] == pytest.approx(0.9 / 1.04, rel=1e-6)
    assert study["oracle"]["static_scales"] == pytest.approx({"small": 1.04 * coarse["static:small"],
                                                               "big": 1.04 * coarse["static:big"]}, rel=1e-6)


def test_restated_summary_says_which_lead_in_its_window_oracle_was_bisected_with() -> None:
    # A window oracle recorded before the lead-in (no "lead_in_s") served each window from an idle cluster, which
    # rates even one fixed plan above itself (70B conv: its 6.749 was that bias); a restated summary gave
    # simulated_oracle_fraction against it without saying so.
    def row(policy: str, scale: float) -> dict:
        return {"policy": policy, "variant": None, "capacity_scale": scale}

    study = {"mean_rate_rps": 2.0, "summary": {},
             "rows": [row("plain-vllm", 3.0), row("static-mix", 6.2), row("oserve:milp", 6.3), row("oracle", 6.8),
                      row("window-oracle", 6.5)],
             "oracle": {"scale": 6.8, "window_bound_scale": 6.8, "window_oracle": {"scale": 6.5}}}
    restate_study(study)
    assert study["summary"]["window_oracle_lead_in_s"] == 0.0
    study["oracle"]["window_oracle"]["lead_in_s"] = "inf"
    restate_study(study)
    assert study["summary"]["window_oracle_lead_in_s"] == "inf"
    del study["oracle"]["window_oracle"]
    restate_study(study)
    assert study["summary"]["window_oracle_lead_in_s"] is None
