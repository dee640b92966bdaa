"""Deployment policies the simulator compares: ``oserve``, ``static:VARIANT``, ``best-static``, ``plain-vllm``.

* ``oserve``: a :class:`~oserve.control.controller.Controller` (forecaster + planner) re-plans every control
  interval; the initial deployment is the planner's plan for the mean per-class rate of the trace's
  first ``initial_window_s`` seconds (what an operator would deploy for the expected load).
* ``static:VARIANT``: as many replicas of one variant as the cluster holds
  (:class:`oserve.policies.StaticPlanner`), never changed, requests spread round-robin.
* ``best-static``: each variant's static deployment is simulated on the same trace and the best one
  in hindsight is kept (highest goodput, then highest throughput).
* ``plain-vllm``: the static deployment a vLLM user would pick without profiling: fp16 (or bf16)
  at the smallest TP degree whose KV cache gets at least ``min_kv_fraction`` of the replica's
  memory; round-robin.
"""

from __future__ import annotations

from dataclasses import dataclass

from oserve.errors import ConfigError
from oserve.profiles.table import ProfileTable
from oserve.types import ClusterSpec, Demand, Plan

__all__ = ["static_plan", "plain_vllm_variant", "PolicySpec", "parse_policy", "restrict_table"]


@dataclass(frozen=True)
class PolicySpec:
    """A parsed ``--policy`` value.

    Attributes:
        kind: ``oserve``, ``static``, ``best-static`` or ``plain-vllm``.
        variant: the variant of ``static:VARIANT``.
    """

    kind: str
    variant: str | None = None

    @property
    def label(self) -> str:
        return f"static:{self.variant}" if self.kind == "static" else self.kind


def parse_policy(text: str) -> PolicySpec:
    """Parse ``oserve``, ``static:VARIANT``, ``best-static`` or ``plain-vllm``.

    Raises:
        ConfigError: anything else (names the allowed forms).
    """
    t = text.strip()
    if t in ("oserve", "best-static", "plain-vllm"):
        return PolicySpec(t)
    if t.startswith("static:") and len(t) > len("static:"):
        return PolicySpec("static", t.split(":", 1)[1])
    raise ConfigError(f"unknown policy {text!r}", field="policy",
                      allowed="oserve, static:VARIANT, best-static, plain-vllm")


def restrict_table(table: ProfileTable, variants: list[str] | None = None, model: str | None = None) -> ProfileTable:
    """A copy of ``table`` keeping only the named variants and/or one model's variants.

    Raises:
        ConfigError: a named variant is missing, or nothing is left.
    """
    keep = dict(table.variants)
    if variants:
        missing = [v for v in variants if v not in keep]
        if missing:
            raise ConfigError(f"variants {missing} are not in the table", field="variants",
                              allowed=", ".join(sorted(keep)))
        keep = {v: keep[v] for v in variants}
    if model:
        keep = {k: v for k, v in keep.items() if v.model == model}
    if not keep:
        models = sorted({v.model for v in table.variants.values()})
        raise ConfigError(f"no variant left for model {model!r}", field="model", allowed=", ".join(models))
    return table.model_copy(update={"variants": keep})


def static_plan(cluster: ClusterSpec, table: ProfileTable, variant: str) -> Plan:
    """The cluster filled with replicas of ``variant``: :class:`oserve.policies.StaticPlanner`'s plan.

    Raises:
        ConfigError: unknown variant, or no replica fits on any node.
    """
    from oserve.policies.static import StaticPlanner

    if variant not in table.variants:
        raise ConfigError(f"unknown variant {variant!r}", field="policy", allowed=", ".join(sorted(table.variants)))
    plan = StaticPlanner(variant).plan(cluster, table, Demand(rates_rps={c: 0.0 for c in table.class_names}), None)
    if not plan.replicas:
        raise ConfigError(f"no replica of {variant!r} fits the cluster", field="policy",
                          allowed="a variant whose devices and memory fit a node")
    return plan


def plain_vllm_variant(table: ProfileTable, *, model: str | None = None, min_kv_fraction: float = 0.25) -> str:
    """The variant a vLLM user would deploy without profiling.

    Rule: precision fp16 (or bf16), pipeline parallel 1, the smallest TP degree whose KV cache
    takes at least ``min_kv_fraction`` of the replica's memory (so the model fits *with room for
    KV cache*, not just its weights). Ties: the larger KV cache. A table with no fp16/bf16 variant
    (e.g. ``examples/profiles/cpu-smollm2-precision.json``: fp32 and int8) gets the same rule over its
    fp32 variants, the full precision such a user runs there (the demo's "plain" deployment).

    Args:
        table: the profile table.
        model: restrict to one model (default: the table must hold a single model).
        min_kv_fraction: share of the replica's memory the KV cache must get (0..1).

    Raises:
        ConfigError: several models and none named, or no fp16/bf16 (else fp32) variant meets the rule.
    """
    if not 0 <= min_kv_fraction < 1:
        raise ConfigError(f"min_kv_fraction must be in [0, 1), got {min_kv_fraction}", field="min_kv_fraction",
                          allowed="[0, 1)")
    vs = [v for v in table.variants.values() if model is None or v.model == model]
    models = sorted({v.model for v in vs})
    if len(models) != 1:
        raise ConfigError(f"plain-vllm needs one model, the table has {models}", field="model",
                          allowed=", ".join(models))
    half = {"fp16", "bf16"}
    precisions = half if any(v.precision.lower() in half for v in vs) else {"fp32"}
    ok = []
    for v in vs:
        if v.precision.lower() not in precisions or v.pp != 1:
            continue
        total = v.memory_per_device_bytes * v.devices_per_replica
        if total > 0 and v.kv_cache_bytes >= min_kv_fraction * total:
            ok.append(v)
    if not ok:
        if not any(v.precision.lower() in precisions for v in vs):
            raise ConfigError(f"no fp16, bf16 or fp32 variant of {models[0]}: plain vLLM runs full or half precision",
                              field="table", allowed="a table with an fp16, bf16 or fp32 variant")
        names = "/".join(sorted(precisions))
        raise ConfigError(f"no {names} variant of {models[0]} leaves {min_kv_fraction:.0%} of memory to the "
                          "KV cache", field="min_kv_fraction", allowed="a smaller fraction or a table with such a variant")
    best = min(ok, key=lambda v: (v.tp, -v.kv_cache_bytes, v.name))
    return best.name
