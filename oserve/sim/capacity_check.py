"""Check a profile table's per-class capacities against the simulator.

For each (variant, class), one replica is simulated under Poisson arrivals of that class's expected
request (``expected_input_tokens``, ``expected_output_tokens``) at ``fraction`` x the table's
``capacity_rps``, and the SLO attainment and p99 TTFT/TPOT are reported. A table whose capacities
the simulated replica cannot sustain within the SLO makes every planner that trusts it plan too few
replicas; :func:`derate_table` scales the capacities a planner sees.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from oserve.errors import ConfigError
from oserve.profiles.table import ProfileTable
from oserve.sim.engine import SimOptions, Simulation
from oserve.sim.metrics import summarise
from oserve.types import DEFAULT_SCHEME, ClassScheme, ClusterSpec, Plan, ReplicaPlacement
from oserve.workload.trace import Trace

__all__ = ["check_capacity", "derate_table"]


def check_capacity(table: ProfileTable, variant: str, cls: str, *, fraction: float = 1.0, duration_s: float = 600.0,
                   scheme: ClassScheme = DEFAULT_SCHEME, seed: int = 0) -> dict[str, Any]:
    """Simulate one replica of ``variant`` serving class ``cls`` at ``fraction`` x its table capacity.

    Returns:
        ``{"variant", "class", "rate_rps", "table_capacity_rps", "slo_attainment", "ttft_p99_s",
        "tpot_p99_s", "table_ttft_s", "table_tpot_s"}``.

    Raises:
        ConfigError: unknown variant/class, or a capacity of 0.
    """
    if variant not in table.variants:
        raise ConfigError(f"unknown variant {variant!r}", field="variant", allowed=", ".join(sorted(table.variants)))
    v = table.variants[variant]
    if cls not in v.classes:
        raise ConfigError(f"unknown class {cls!r}", field="class", allowed=", ".join(v.classes))
    cap = v.classes[cls].capacity_rps
    if cap <= 0:
        raise ConfigError(f"{variant} has no capacity for {cls}", field="class", allowed="a class with capacity > 0")
    c = scheme.by_name(cls)
    rate = cap * fraction
    rng = np.random.default_rng(seed)
    n = max(2, int(rate * duration_s))
    arr = np.cumsum(rng.exponential(1.0 / rate, n))
    arr -= arr[0]
    tr = Trace(arr, np.full(n, c.expected_input_tokens), np.full(n, c.expected_output_tokens), name=f"{cls}@{rate:.3g}")
    cluster = ClusterSpec.homogeneous(1, v.devices_per_replica, v.device_type,
                                      max(v.memory_per_device_bytes, 1))
    plan = Plan(replicas=[ReplicaPlacement(variant=variant, node="node0",
                                           device_ids=tuple(range(v.devices_per_replica)))])
    res = Simulation(tr, table, cluster, plan, routing="round-robin", scheme=scheme,
                     options=SimOptions(sample_interval_s=60.0)).run()
    m = summarise(res, slo_ttft_s=table.slo.ttft_s, slo_tpot_s=table.slo.tpot_s)
    return {"variant": variant, "class": cls, "rate_rps": rate, "table_capacity_rps": cap,
            "slo_attainment": m["slo_attainment"], "ttft_p99_s": m["ttft_p99_s"], "tpot_p99_s": m["tpot_p99_s"],
            "table_ttft_s": v.classes[cls].ttft_s, "table_tpot_s": v.classes[cls].tpot_s}


def derate_table(table: ProfileTable, factor: float) -> ProfileTable:
    """A copy of ``table`` whose every ``capacity_rps`` is multiplied by ``factor`` (0 < factor <= 1).

    Raises:
        ConfigError: ``factor`` outside (0, 1].
    """
    if not 0 < factor <= 1:
        raise ConfigError(f"capacity factor must be in (0, 1], got {factor}", field="planner_capacity_factor",
                          allowed="(0, 1]")
    if factor == 1:
        return table
    variants = {
        name: v.model_copy(update={"classes": {c: p.model_copy(update={"capacity_rps": p.capacity_rps * factor})
                                               for c, p in v.classes.items()}})
        for name, v in table.variants.items()
    }
    return table.model_copy(update={"variants": variants})
