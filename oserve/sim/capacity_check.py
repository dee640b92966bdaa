"""Check a profile table's per-class capacities against the simulator.

For each (variant, class), one replica is simulated under Poisson arrivals of that class's requests
at ``fraction`` x the table's ``capacity_rps`` (or at an explicit ``rate_rps``), and the SLO
attainment and p99 TTFT/TPOT are reported. Requests are the class's expected request
(``expected_input_tokens``, ``expected_output_tokens``) or are drawn from given token lengths (for
example a real trace's requests of that class). Prompts are clipped to what the replica can hold
(``max_model_len`` and the KV cache, input cut first, as :func:`oserve.workload.transforms.clip_tokens`
does), as a serving stack that truncates prompts to the context would; without the clip the
expected long prompt (4,096 tokens + output) of a 4,096-token model is refused and attainment reads 0
at any rate. A table whose capacities the simulated replica cannot sustain within the SLO makes every
planner that trusts it plan too few replicas; :func:`derate_table` scales the capacities a planner sees.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from oserve.errors import ConfigError
from oserve.profiles.table import ProfileTable
from oserve.sim.engine import SimOptions, Simulation
from oserve.sim.metrics import summarise
from oserve.sim.replica import ReplicaParams
from oserve.types import DEFAULT_SCHEME, SLO, ClassScheme, ClusterSpec, Plan, ReplicaPlacement
from oserve.workload.trace import Trace
from oserve.workload.transforms import clip_tokens

__all__ = ["check_capacity", "derate_table"]


def check_capacity(table: ProfileTable, variant: str, cls: str, *, fraction: float = 1.0, duration_s: float = 600.0,
                   scheme: ClassScheme = DEFAULT_SCHEME, seed: int = 0, rate_rps: float | None = None,
                   lengths: tuple[np.ndarray, np.ndarray] | None = None, slo: SLO | None = None,
                   min_requests: int = 2) -> dict[str, Any]:
    """Simulate one replica of ``variant`` serving class ``cls`` at ``fraction`` x its table capacity.

    Args:
        table: the profile table (its iteration model drives the simulated replica).
        variant: variant name.
        cls: class name.
        fraction: offered rate as a fraction of the table's ``capacity_rps`` (ignored with ``rate_rps``).
        duration_s: length of the Poisson arrival process, seconds.
        scheme: request classes (expected lengths of ``cls``).
        seed: seed of the arrivals and of the length sampling.
        rate_rps: offered rate, req/s (> 0); allows classes whose table capacity is 0.
        lengths: ``(input_tokens, output_tokens)`` arrays of shape ``(m,)`` to draw each request's
            lengths from (uniformly, with replacement); default: the class's expected lengths.
        slo: SLO to count attainment against (default: the table's).
        min_requests: simulate at least this many requests (the arrival process runs longer than
            ``duration_s`` at low rates, so attainment is not read off a handful of requests).

    Returns:
        ``{"variant", "class", "rate_rps", "table_capacity_rps", "slo_attainment", "ttft_p99_s",
        "tpot_p99_s", "table_ttft_s", "table_tpot_s", "requests", "clipped", "refused"}``
        (``clipped``: requests whose prompt was cut to fit the replica).

    Raises:
        ConfigError: unknown variant/class, a table capacity of 0 without ``rate_rps``, a rate or
            duration that is not positive, or empty ``lengths``.
    """
    if variant not in table.variants:
        raise ConfigError(f"unknown variant {variant!r}", field="variant", allowed=", ".join(sorted(table.variants)))
    v = table.variants[variant]
    if cls not in v.classes:
        raise ConfigError(f"unknown class {cls!r}", field="class", allowed=", ".join(v.classes))
    if not duration_s > 0:
        raise ConfigError(f"duration_s must be > 0, got {duration_s}", field="duration_s", allowed="> 0 s")
    cap = v.classes[cls].capacity_rps
    if rate_rps is None:
        if cap <= 0:
            raise ConfigError(f"{variant} has no capacity for {cls}", field="class",
                              allowed="a class with capacity > 0, or an explicit rate_rps")
        rate = cap * fraction
    else:
        rate = rate_rps
    if not rate > 0:
        raise ConfigError(f"rate must be > 0 req/s, got {rate}", field="rate_rps", allowed="> 0 req/s")
    c = scheme.by_name(cls)
    rng = np.random.default_rng(seed)
    n = max(2, min_requests, int(rate * duration_s))
    arr = np.cumsum(rng.exponential(1.0 / rate, n))
    arr -= arr[0]
    if lengths is None:
        inp, out = np.full(n, c.expected_input_tokens, np.int64), np.full(n, c.expected_output_tokens, np.int64)
    else:
        li, lo = (np.asarray(x, np.int64) for x in lengths)
        if li.size == 0 or li.shape != lo.shape:
            raise ConfigError("lengths must be two non-empty arrays of equal shape", field="lengths",
                              allowed="(input_tokens, output_tokens) arrays of shape (m,), m >= 1")
        pick = rng.integers(0, li.size, n)
        inp, out = li[pick], np.maximum(lo[pick], 1)
    max_total = ReplicaParams.from_profile(v).max_request_tokens
    tr = clip_tokens(Trace(arr, inp, out, name=f"{cls}@{rate:.3g}"), max_total=max_total)
    clipped = int(np.sum(tr.input_tokens < inp))
    cluster = ClusterSpec.homogeneous(1, v.devices_per_replica, v.device_type,
                                      max(v.memory_per_device_bytes, 1))
    plan = Plan(replicas=[ReplicaPlacement(variant=variant, node="node0",
                                           device_ids=tuple(range(v.devices_per_replica)))])
    res = Simulation(tr, table, cluster, plan, routing="round-robin", scheme=scheme,
                     options=SimOptions(sample_interval_s=60.0)).run()
    s = slo or table.slo
    m = summarise(res, slo_ttft_s=s.ttft_s, slo_tpot_s=s.tpot_s)
    return {"variant": variant, "class": cls, "rate_rps": rate, "table_capacity_rps": cap,
            "slo_attainment": m["slo_attainment"], "ttft_p99_s": m["ttft_p99_s"], "tpot_p99_s": m["tpot_p99_s"],
            "table_ttft_s": v.classes[cls].ttft_s, "table_tpot_s": v.classes[cls].tpot_s,
            "requests": n, "clipped": clipped, "refused": m["refused"]}


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
