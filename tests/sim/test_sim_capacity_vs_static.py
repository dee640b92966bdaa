"""Property: on every shipped trace, oserve's simulated capacity under SLO is at least the best static deployment's.

Scaled down to run in CI (the full 4 x 8 A100 study is ``bench/capacity.py``): Llama-2-70B of the shipped modelled
A100 table on one node of 8 A100-80GB, the first 120 s of each Azure 2023 trace shipped in ``data/traces``
(code, conv, and both merged on one clock), SLO attainment target 0.9. The best static deployment is the best of
every single-variant cluster-filling deployment and the hindsight mix (the guard's plan for the trace's mean
demand, never switched), each bisected to 5%. oserve (MILP + hysteresis + the simulator-scored guard, EWMA
forecast, re-planning every 30 s) is then simulated once at that scale: if it keeps the target there, its
capacity is at least the best static's (the paired probe of :func:`oserve.compose.capacity.capacity_study`).
Deterministic (seeded scaling, seeded synthetic workloads).
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TRACES = ROOT / "data/traces/azure_llm_2023"
FILES = {"code": ["AzureLLMInferenceTrace_code.csv"], "conv": ["AzureLLMInferenceTrace_conv.csv"],
         "merged": ["AzureLLMInferenceTrace_code.csv", "AzureLLMInferenceTrace_conv.csv"]}
TARGET = 0.9


@pytest.mark.parametrize("trace_name", sorted(FILES))
def test_oserve_carries_at_least_the_best_static_deployment(trace_name: str) -> None:
    from oserve.compose.capacity import default_policies, find_capacity, parse_capacity_policy, simulate_policy
    from oserve.compose.simulation import load_traces
    from oserve.profiles.table import ProfileTable
    from oserve.sim.config import ClusterConfig, NodeGroupConfig, SimConfig
    from oserve.sim.policies import restrict_table
    from oserve.workload.transforms import clip_tokens, scale_rate

    path = ROOT / "examples/profiles/a100-80gb-mixed.json"
    table = restrict_table(ProfileTable.load(str(path)), model="llama-2-70b")
    cfg = SimConfig(table=str(path), planner={"kind": "milp"}, forecaster={"kind": "ewma"}, sim_scored_plans=True,
                    control={"interval_s": 30, "horizon_s": 90, "monitor_window_s": 30, "history_bin_s": 30},
                    cluster=ClusterConfig(nodes=[NodeGroupConfig(name="node", count=1, device_type="a100-80gb",
                                                                 devices=8, device_memory_gib=80)]))
    cluster, scheme = cfg.cluster.spec(), cfg.classes.to_scheme()
    trace = clip_tokens(load_traces([str(TRACES / f) for f in FILES[trace_name]], duration_s=120.0),
                        max_total=max(v.max_model_len for v in table.variants.values()))
    fixed = [p for p in default_policies(table, cluster, ("milp",)) if p.startswith("static")]
    caps = {p: find_capacity(p, trace, table, cluster, scheme, cfg, target=TARGET, rel_tol=0.05).capacity_scale
            for p in fixed}
    best = max(caps, key=lambda p: caps[p])
    assert caps[best] > 0, caps
    summary, _ = simulate_policy(parse_capacity_policy("oserve:milp"), scale_rate(trace, caps[best], seed=0), table,
                                 cluster, scheme, cfg)
    assert summary["slo_attainment"] >= TARGET, (best, caps[best], summary["slo_attainment"], caps)
