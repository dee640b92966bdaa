"""SLO-constrained capacity of one replica per request class, and the lookup-table builder.

The same :func:`build_table` turns *measured* iteration-time models (the profiler's fits) and
*modelled* ones (the roofline) into a :class:`~oserve.profiles.table.ProfileTable`.

Capacity model (one replica serving one class alone; input ``I`` and output ``O`` tokens, the
class's expected lengths; continuous batching with chunked prefill, as vLLM schedules):

1. KV limit: ``B_kv = floor(kv_capacity_tokens / (I + O))`` (every running request may grow to
   its full length); ``B_max = min(max_num_seqs, B_kv)``. Context: a variant only ever serves
   requests that fit its ``max_model_len`` (longer prompts are clipped or refused before they reach
   it), so a class whose expected ``I + O`` exceeds ``max_model_len`` is profiled at
   ``I = max_model_len - O`` when that still lies in the class's input range (e.g. Llama-2-70B's
   4,096-token context: long-input classes, expected 4,096 input tokens, are profiled at
   4,096 - O); otherwise (the class cannot fit at all) it gets capacity 0.
2. For a steady-state concurrency ``B`` (requests in decode), the mean KV held is
   ``K = B (I + O/2)``. New prompts are prefilled inside decode iterations, so an iteration costs
   ``T = D + lam T P``, where ``D = decode_step_s(B, K)``, ``P = prefill_s(I) - a`` (a prompt's
   prefill work without the fixed cost, which the iteration already pays) and ``lam`` the arrival
   rate: ``T = D / (1 - lam P)``. TPOT = ``T``.
3. Little's law: ``lam = B / E2E`` with ``E2E = TTFT + (O - 1) T``. Steps 2-3 are a fixed
   point, solved by iteration (it converges: T increases in lam, lam decreases in T).
4. TTFT = queueing + service. Service: the prompt's chunks ride ``ceil(I / chunk)`` iterations
   with ``chunk = max_num_batched_tokens - B`` tokens of budget, each costing ``D`` plus that
   chunk's prefill work. Queueing: arrivals wait for the prefill "server" busy a fraction
   ``rho = lam P`` of the time; the M/D/1 mean wait ``rho / (2 (1 - rho)) * P`` times
   ``ln(100) ~ 4.6`` (an exponential-tail p99) plus one iteration ``T`` (a request arriving
   mid-iteration waits for its end).
5. Capacity = ``max lam(B)`` over ``B in [1, B_max]`` with ``TTFT(B) <= slo.ttft_s`` and
   ``TPOT(B) <= slo.tpot_s`` (0 if none). Taking a max over the feasible set makes capacity
   monotone in the SLO: a looser SLO only enlarges that set.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Protocol

from oserve.errors import ProfileError
from oserve.profiles.iteration import IterationTimeModel
from oserve.profiles.table import ClassProfile, ProfileTable, VariantProfile
from oserve.profiles.variants import Variant
from oserve.types import DEFAULT_SCHEME, SLO, ClassScheme, RequestClass

__all__ = ["LoadPoint", "ReplicaShape", "load_point", "class_capacity", "variant_profile", "build_table"]

_P99_EXP = math.log(100.0)


class ReplicaShape(Protocol):
    """The engine limits the capacity model needs: a :class:`~oserve.profiles.variants.Variant`, or a
    table row's numbers (:func:`oserve.profiles.rescore.rescore_table`)."""

    @property
    def max_model_len(self) -> int: ...  # tokens
    @property
    def kv_capacity_tokens(self) -> int: ...  # tokens the KV cache holds
    @property
    def max_num_seqs(self) -> int: ...
    @property
    def max_num_batched_tokens(self) -> int: ...  # tokens per iteration


@dataclass(frozen=True)
class LoadPoint:
    """Steady state of one replica at concurrency ``concurrency`` (seconds, req/s, tokens/s)."""

    concurrency: int
    rate_rps: float
    ttft_s: float
    tpot_s: float
    e2e_s: float
    stable: bool


def load_point(
    model: IterationTimeModel,
    concurrency: int,
    input_tokens: int,
    output_tokens: int,
    max_num_batched_tokens: int,
    iterations: int = 60,
) -> LoadPoint:
    """Steady state at ``concurrency`` requests in flight (formula: module docstring, 2-4).

    Args:
        model: the replica's iteration-time model.
        concurrency: requests in decode at once (B >= 1).
        input_tokens / output_tokens: the class's request shape (tokens).
        max_num_batched_tokens: token budget of one iteration.

    Returns:
        A ``LoadPoint``; ``stable`` is False when prefill work alone would saturate the replica.
    """
    b = max(1, int(concurrency))
    i_tok, o_tok = float(input_tokens), float(max(1, output_tokens))
    d = model.decode_step_s(b, b * (i_tok + o_tok / 2.0))
    p = max(0.0, model.prefill_s(i_tok) - model.a)
    chunk = max(1, max_num_batched_tokens - b)
    n_chunks = max(1, math.ceil(i_tok / chunk))
    service = n_chunks * d + p
    lam = b / (service + o_tok * d)
    t = d
    ttft = service
    for _ in range(iterations):
        rho = min(lam * p, 0.999)
        t = d / (1.0 - rho)
        wait = rho / (2.0 * (1.0 - rho)) * p * _P99_EXP + t
        ttft = wait + n_chunks * t + p
        new_lam = b / (ttft + (o_tok - 1.0) * t)
        if abs(new_lam - lam) <= 1e-9 * max(lam, 1e-12):
            lam = new_lam
            break
        lam = 0.5 * (lam + new_lam)
    stable = lam * p < 0.99
    return LoadPoint(b, lam, ttft, t, ttft + (o_tok - 1.0) * t, stable)


def class_capacity(
    model: IterationTimeModel,
    variant: ReplicaShape,
    cls: RequestClass,
    slo: SLO,
) -> ClassProfile:
    """SLO-constrained capacity of one replica of ``variant`` on request class ``cls``.

    Returns:
        ``ClassProfile`` with capacity (req/s), TTFT/TPOT at that load (s), the KV-limited max
        concurrency and output throughput (tokens/s). Capacity 0 if no concurrency meets the SLO
        or no input of the class fits ``max_model_len`` with the expected output (an expected input
        beyond ``max_model_len - O`` is clipped to it; see the module docstring).
    """
    i_tok, o_tok = cls.expected_input_tokens, cls.expected_output_tokens
    fit_in = variant.max_model_len - o_tok
    if i_tok > fit_in >= max(1, cls.input_range[0]):  # the longest prompts of the class this variant admits
        i_tok = fit_in
    if i_tok + o_tok > variant.max_model_len:
        return ClassProfile(capacity_rps=0.0, ttft_s=0.0, tpot_s=0.0, max_concurrency=0)
    b_kv = variant.kv_capacity_tokens // (i_tok + o_tok)
    b_max = int(min(variant.max_num_seqs, b_kv))
    best: LoadPoint | None = None
    first: LoadPoint | None = None
    for b in range(1, b_max + 1):
        pt = load_point(model, b, i_tok, o_tok, variant.max_num_batched_tokens)
        first = first or pt
        if pt.stable and pt.ttft_s <= slo.ttft_s and pt.tpot_s <= slo.tpot_s:
            if best is None or pt.rate_rps > best.rate_rps:
                best = pt
    if best is None:
        ref = first
        return ClassProfile(
            capacity_rps=0.0, ttft_s=ref.ttft_s if ref else 0.0, tpot_s=ref.tpot_s if ref else 0.0,
            max_concurrency=b_max,
        )
    return ClassProfile(
        capacity_rps=best.rate_rps, ttft_s=best.ttft_s, tpot_s=best.tpot_s, max_concurrency=b_max,
        throughput_tokens_s=best.rate_rps * o_tok,
    )


def variant_profile(
    variant: Variant,
    model: IterationTimeModel,
    scheme: ClassScheme,
    slo: SLO,
    start_time_s: float,
    memory_per_device_bytes: int | None = None,
) -> VariantProfile:
    """The table row of one variant: its memory numbers, iteration model and per-class capacity."""
    return VariantProfile(
        name=variant.name,
        model=variant.model.name,
        precision=variant.precision,
        tp=variant.tp,
        pp=variant.pp,
        device_type=variant.device_type,
        devices_per_replica=variant.devices,
        memory_per_device_bytes=memory_per_device_bytes or variant.memory_per_device_bytes,
        weights_bytes=variant.weights_bytes,
        kv_cache_bytes=variant.kv_cache_total_bytes,
        kv_bytes_per_token=variant.kv_bytes_per_token,
        max_num_seqs=variant.max_num_seqs,
        max_num_batched_tokens=variant.max_num_batched_tokens,
        max_model_len=variant.max_model_len,
        start_time_s=start_time_s,
        iteration=model,
        classes={c.name: class_capacity(model, variant, c, slo) for c in scheme.classes},
    )


def build_table(
    variants: Sequence[Variant],
    models: Mapping[str, IterationTimeModel],
    *,
    source: str,
    slo: SLO | None = None,
    scheme: ClassScheme = DEFAULT_SCHEME,
    start_times_s: Mapping[str, float] | None = None,
    memory_per_device_bytes: Mapping[str, int] | None = None,
    hardware: dict[str, str] | None = None,
    software: dict[str, str] | None = None,
    created: str | None = None,
) -> ProfileTable:
    """Build the lookup table from per-variant iteration-time models.

    Args:
        variants: the variants (names must be unique).
        models: variant name -> iteration-time model (measured fit or roofline).
        source: ``"measured"`` or ``"modelled"``.
        slo: latency targets (default ``SLO()``).
        scheme: request classes.
        start_times_s: variant name -> engine start time, s (required for every variant).
        memory_per_device_bytes: optional measured peak memory per device, bytes.
        hardware / software: provenance recorded in the table.
        created: ISO date (default: today).

    Raises:
        ProfileError: duplicate variant names, or a variant without a model or start time.
    """
    slo = slo or SLO()
    start_times_s = start_times_s or {}
    out: dict[str, VariantProfile] = {}
    for v in variants:
        if v.name in out:
            raise ProfileError(f"duplicate variant name {v.name!r}")
        if v.name not in models:
            raise ProfileError(f"no iteration-time model for variant {v.name!r}")
        if v.name not in start_times_s:
            raise ProfileError(f"no start time for variant {v.name!r}")
        mem = (memory_per_device_bytes or {}).get(v.name)
        out[v.name] = variant_profile(v, models[v.name], scheme, slo, start_times_s[v.name], mem)
    return ProfileTable(
        source=source,  # type: ignore[arg-type]
        created=created or date.today().isoformat(),
        hardware=hardware or {},
        software=software or {},
        slo=slo,
        class_names=scheme.names,
        variants=out,
    )
