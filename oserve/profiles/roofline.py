"""Roofline iteration-time model for hardware that is not present.

From a :class:`~oserve.profiles.variants.Variant` (architecture, precision, TP/PP, device) and
efficiency factors it derives the coefficients of the shared
:class:`~oserve.profiles.iteration.IterationTimeModel`::

    prefill_s(t)      = a + b t + c t^2
    decode_step_s(B,K) = d + e B + f K

Terms (per replica; ``F`` = peak FLOP/s of one device in the compute dtype, ``BW`` = peak
memory bandwidth of one device, ``W`` = weight bytes, ``P`` = linear-layer parameters,
``L`` = layers, ``h`` = hidden size, ``V`` = vocabulary, ``tp``/``pp`` degrees):

* prefill is compute-bound: ``b = 2 P / (tp F mfu)`` (2 FLOPs per weight per token, split over
  TP ranks; PP stages run one after another for one prompt, so ``pp`` does not divide it);
  causal attention adds ``c = 2 L h / (tp F mfu)`` (QK^T and PV, 2 FLOPs each, half the
  t x t matrix); ``a`` reads the weights once: ``W / (tp pp BW mbu)`` per stage, summed over
  stages, plus the LM head for the last token and a fixed engine step cost.
* decode is memory-bound: ``d = W / (tp BW mbu) + step_overhead_s`` (every step reads all
  weights; with PP each of the ``pp`` micro-batches re-reads its stage's weights, so PP does
  not cut ``d``: that is its bubble cost against TP), ``f = kv_bytes_per_token / (tp pp BW mbu)``
  (attention reads the KV cache), ``e = 2 P / (tp pp F mfu) + 2 V h / (tp F mfu) +
  per_seq_overhead_s`` (compute grows with the batch; CPU-side sampling/scheduling per sequence).
* TP adds 2 all-reduces per layer of ``h`` activations per token (Megatron-LM: after attention
  and after the MLP); a ring all-reduce of S bytes costs ``latency + 2 (tp-1)/tp * S / busbw``
  (NCCL's bus-bandwidth convention). Latency goes into ``a`` and ``d``, the bytes into ``b``/``e``.
* PP adds one point-to-point send per stage boundary (latency in ``a``/``d``).
* Weight-only int4 (AWQ/GPTQ) reads 4-bit weights (``W`` shrinks ~3.9x) but dequantises inside
  the GEMM: its compute terms are multiplied by ``int4_dequant_factor``, which costs throughput
  at large batch (GPUStack's vLLM 0.9.2 A100 figure: AWQ 0.93x, GPTQ 0.79x of BF16 throughput
  when memory is not the limit; default factor 1.25 sits between).

The sum (not the max) of compute and memory terms keeps the model linear, which the shared
iteration model and the calibration need; the efficiency factors are fitted to measurements
(``bench/calibrate.py``), so they absorb the overlap.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from oserve.profiles.iteration import IterationTimeModel
from oserve.profiles.variants import Variant

__all__ = [
    "Efficiency",
    "DEFAULT_EFFICIENCY",
    "efficiency_for",
    "roofline_basis",
    "roofline_model",
    "estimate_start_time_s",
    "BASIS_TERMS",
]

#: order of the basis terms returned by :func:`roofline_basis`.
BASIS_TERMS = ("const", "compute", "memory", "step", "seq")


class Efficiency(BaseModel):
    """Calibrated efficiency factors of one device family on one engine.

    Attributes:
        mfu: achieved fraction of peak FLOP/s in GEMMs and attention (model FLOPs utilization).
        mbu: achieved fraction of peak memory bandwidth when reading weights and KV cache.
        step_overhead_s: fixed engine cost per iteration (scheduling, launch, sync), s.
        per_seq_overhead_s: engine cost per sequence per iteration (sampling, bookkeeping), s.
        int4_dequant_factor: multiplier on compute terms of weight-only int4 GEMMs.
        source: where the numbers were fitted.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    mfu: float = Field(..., gt=0, le=1.5)
    mbu: float = Field(..., gt=0, le=1.5)
    step_overhead_s: float = Field(0.0, ge=0)
    per_seq_overhead_s: float = Field(0.0, ge=0)
    int4_dequant_factor: float = Field(1.25, ge=1)
    source: str = ""


#: Defaults from the committed calibration run (``bench/calibrate.py`` ->
#: ``bench/results/calibration.json``): mfu from Vidur's per-operator GEMM timings, mbu and the
#: overheads from LLM-Inference-Bench vLLM rows (calibration split). L4 uses A100's factors (no
#: public points here). CPU: fitted to nothing yet (see docs/profiles.md).
#: H200: mfu and mbu fitted (``bench/h200_check.py`` -> ``bench/results/h200_check.json``) to
#: ``bench/results/h200_microbench.json``, measured 2026-11-29 on one H200: a PyTorch 2.11 eager
#: microbenchmark of Llama-3-8B's 32 bf16 decoder layers (prefill T = 256..4096; decode B = 1..256
#: at 1,024 KV tokens, CUDA-graph replay), NOT vLLM -- kernel-level factors, like H100's mfu. The
#: engine overheads are H100's (a PyTorch loop has no scheduler to measure).
DEFAULT_EFFICIENCY: dict[str, Efficiency] = {
    "a100": Efficiency(mfu=0.686, mbu=0.835, step_overhead_s=1.57e-3, per_seq_overhead_s=7.55e-5,
                       source="bench/results/calibration.json factors.a100 (seed 0)"),
    "h100": Efficiency(mfu=0.648, mbu=0.876, step_overhead_s=2.64e-3, per_seq_overhead_s=6.36e-5,
                       source="bench/results/calibration.json factors.h100 (seed 0)"),
    "h200": Efficiency(mfu=0.689, mbu=0.733, step_overhead_s=2.64e-3, per_seq_overhead_s=6.36e-5,
                       source="mfu/mbu: bench/results/h200_check.json factors_fitted (one H200, PyTorch eager "
                       "microbenchmark 2026-11-29, not vLLM); overheads: h100's"),
    "cpu": Efficiency(mfu=0.5, mbu=0.5, step_overhead_s=0.005, per_seq_overhead_s=0.0005,
                      source="uncalibrated guess; fit with oserve.profiles.fit on a measured profile"),
}

_FAMILY = {"a100-40gb": "a100", "a100-80gb": "a100", "l4": "a100", "h100-sxm": "h100", "h200": "h200", "cpu": "cpu"}


def efficiency_for(device_type: str) -> Efficiency:
    """Default efficiency of a device type's family (see :data:`DEFAULT_EFFICIENCY`)."""
    return DEFAULT_EFFICIENCY[_FAMILY.get(device_type, "a100")]


def roofline_basis(variant: Variant, int4_dequant_factor: float = 1.25) -> dict[str, np.ndarray]:
    """Iteration-model coefficients split by what scales them.

    The coefficients ``(a, b, c, d, e, f)`` equal
    ``const + compute / mfu + memory / mbu + step * step_overhead_s + seq * per_seq_overhead_s``.
    Keeping the split lets calibration fit the efficiency factors by linear least squares.

    Args:
        variant: the deployment variant.
        int4_dequant_factor: compute multiplier for weight-only int4.

    Returns:
        Dict over :data:`BASIS_TERMS` of arrays of shape ``(6,)`` (seconds per unit).
    """
    m = variant.model
    hw = variant.hardware
    cpu = hw.kind == "cpu"
    tp = 1 if cpu else variant.tp
    pp = 1 if cpu else variant.pp
    flops_dev = hw.flops(variant.compute_dtype) * (variant.devices if cpu else 1)
    bw_dev = hw.mem_bw_bytes_s
    dq = int4_dequant_factor if variant.precision == "int4" else 1.0

    lin_flops_tok = 2.0 * m.linear_params * dq
    head_flops_seq = 2.0 * m.vocab * m.hidden
    attn_flops_c = 2.0 * m.layers * m.hidden
    weights = float(variant.weights_bytes)

    const = np.zeros(6)
    compute = np.zeros(6)
    memory = np.zeros(6)
    step = np.zeros(6)
    seq = np.zeros(6)
    # prefill a, b, c
    compute[0] = head_flops_seq / (tp * flops_dev)
    memory[0] = weights / (tp * bw_dev)
    step[0] = 1.0
    compute[1] = lin_flops_tok / (tp * flops_dev)
    compute[2] = attn_flops_c / (tp * flops_dev)
    # decode d, e, f
    memory[3] = weights / (tp * bw_dev)
    step[3] = 1.0
    compute[4] = lin_flops_tok / (tp * pp * flops_dev) + head_flops_seq / (tp * flops_dev)
    seq[4] = 1.0
    memory[5] = variant.kv_bytes_per_token / (tp * pp * bw_dev)
    if tp > 1:
        n_ar = 2 * m.layers
        act_bytes = m.hidden * 2.0  # fp16 activations per token
        ring = 2.0 * (tp - 1) / tp
        const[0] += n_ar * hw.allreduce_latency_s
        const[3] += n_ar * hw.allreduce_latency_s
        const[1] += n_ar * ring * act_bytes / hw.allreduce_busbw_bytes_s
        const[4] += n_ar * ring * act_bytes / hw.allreduce_busbw_bytes_s / pp
    if pp > 1:
        p2p_lat = hw.allreduce_latency_s
        const[0] += (pp - 1) * p2p_lat
        const[3] += (pp - 1) * p2p_lat
        const[1] += (pp - 1) * m.hidden * 2.0 / max(hw.interconnect_bw_bytes_s, 1.0)
    return {"const": const, "compute": compute, "memory": memory, "step": step, "seq": seq}


def roofline_model(variant: Variant, efficiency: Efficiency | None = None) -> IterationTimeModel:
    """The iteration-time model of ``variant`` on its device type.

    Args:
        variant: the deployment variant (its ``device_type`` selects the datasheet numbers).
        efficiency: efficiency factors; None uses :func:`efficiency_for` the device type.

    Returns:
        An ``IterationTimeModel`` (``fit_error`` None: it is modelled, not fitted).
    """
    eff = efficiency or efficiency_for(variant.device_type)
    basis = roofline_basis(variant, eff.int4_dequant_factor)
    coef = (
        basis["const"]
        + basis["compute"] / eff.mfu
        + basis["memory"] / eff.mbu
        + basis["step"] * eff.step_overhead_s
        + basis["seq"] * eff.per_seq_overhead_s
    )
    a, b, c, d, e, f = (float(x) for x in coef)
    return IterationTimeModel(a=a, b=b, c=c, d=d, e=e, f=f)


def estimate_start_time_s(variant: Variant, load_bw_bytes_s: float = 2e9, fixed_s: float = 30.0) -> float:
    """Modelled engine start time: ``fixed_s`` (process start, CUDA graphs, warm-up) plus loading
    one device's weight shard at ``load_bw_bytes_s`` (local NVMe with safetensors). An estimate,
    not calibrated; measured profiles record the real value. Seconds."""
    return fixed_s + variant.weights_per_device_bytes / load_bw_bytes_s
