"""Synthetic profile tables for planner tests and benchmarks (not measurements).

``synthetic_table`` builds a :class:`~oserve.profiles.table.ProfileTable` from explicit per-class
capacities; ``synthetic_a100_table`` builds one shaped like the roofline-modelled A100 tables (a
70B-class model at fp16/int8/int4 and TP 1-8, six request classes) from a closed-form cost model.
Both mark the table ``source="modelled"`` and ``hardware={"synthetic": "true"}`` so a synthetic
table is never mistaken for a measured one.
"""

from __future__ import annotations

from oserve.profiles.iteration import IterationTimeModel
from oserve.profiles.table import ClassProfile, ProfileTable, VariantProfile
from oserve.types import SLO

__all__ = ["synthetic_table", "synthetic_a100_table", "SIX_CLASSES", "GIB"]

GIB = 1 << 30

#: Six classes: input {short 512, medium 2048, long 8192 tokens} x output {short 64, long 512 tokens}.
SIX_CLASSES: dict[str, tuple[int, int]] = {
    "short-in/short-out": (512, 64),
    "short-in/long-out": (512, 512),
    "mid-in/short-out": (2048, 64),
    "mid-in/long-out": (2048, 512),
    "long-in/short-out": (8192, 64),
    "long-in/long-out": (8192, 512),
}


def synthetic_table(
    capacities_rps: dict[str, dict[str, float]],
    devices_per_replica: dict[str, int],
    *,
    memory_per_device_bytes: dict[str, int] | int = 40 * GIB,
    start_time_s: dict[str, float] | float = 60.0,
    device_type: str = "a100-80gb",
    class_names: list[str] | None = None,
) -> ProfileTable:
    """Build a table from explicit capacities.

    Args:
        capacities_rps: ``capacities_rps[variant][class]`` = one replica's SLO-constrained capacity,
            req/s. Classes missing for a variant get capacity 0.
        devices_per_replica: devices (GPUs or CPU cores) one replica of each variant uses.
        memory_per_device_bytes: per variant (or one value for all), bytes per device.
        start_time_s: per variant (or one value for all), replica start time, s.
        device_type: device type of every variant.
        class_names: class order; defaults to the union of classes in ``capacities_rps`` (sorted).

    Returns:
        A ``ProfileTable`` with ``source="modelled"`` marked synthetic.
    """
    names = class_names or sorted({c for caps in capacities_rps.values() for c in caps})
    variants = {}
    for v, caps in capacities_rps.items():
        mem = memory_per_device_bytes if isinstance(memory_per_device_bytes, int) else memory_per_device_bytes[v]
        start = start_time_s if isinstance(start_time_s, float | int) else start_time_s[v]
        d = devices_per_replica[v]
        variants[v] = VariantProfile(
            name=v, model="synthetic", precision="fp16", tp=d, device_type=device_type,
            devices_per_replica=d, memory_per_device_bytes=mem, weights_bytes=mem // 2, kv_cache_bytes=mem // 2,
            kv_bytes_per_token=1 << 17, max_num_seqs=256, max_num_batched_tokens=8192, max_model_len=16384,
            start_time_s=float(start), iteration=IterationTimeModel(b=1e-4, d=0.02),
            classes={c: ClassProfile(capacity_rps=float(caps.get(c, 0.0)), ttft_s=0.5, tpot_s=0.05,
                                     max_concurrency=64) for c in names},
        )
    return ProfileTable(source="modelled", created="2026-01-01", hardware={"synthetic": "true"},
                        slo=SLO(), class_names=list(names), variants=variants)


# (name, precision, tp, bytes per parameter, prefill slowdown vs fp16)
_A100_VARIANTS: tuple[tuple[str, str, int, float, float], ...] = (
    ("70b-fp16-tp4", "fp16", 4, 2.0, 1.0),
    ("70b-fp16-tp8", "fp16", 8, 2.0, 1.0),
    ("70b-int8-tp2", "int8", 2, 1.0, 1.05),
    ("70b-int8-tp4", "int8", 4, 1.0, 1.05),
    ("70b-int8-tp8", "int8", 8, 1.0, 1.05),
    ("70b-int4-tp1", "int4", 1, 0.5, 1.35),
    ("70b-int4-tp2", "int4", 2, 0.5, 1.35),
    ("70b-int4-tp4", "int4", 4, 0.5, 1.35),
)


def synthetic_a100_table(
    device_memory_bytes: int = 80 * GIB, tpot_slo_s: float = 0.1, ttft_slo_s: float = 3.0
) -> ProfileTable:
    """A 70B-class model on A100-80GB: 8 variants x 6 classes from a closed-form roofline sketch.

    Per replica with TP degree ``t`` and ``p`` bytes per parameter (70e9 parameters):
    decode step = weights read at 2 TB/s x ``t`` x 0.8 (TP efficiency ``0.8`` per doubling beyond 1);
    prefill = 2 x 70e9 FLOP/token at 312 TFLOP/s x ``t`` x 0.5 utilization (slower for quantised
    kernels); concurrency limited by the KV cache left after the weights (320 KiB/token, fp16 KV)
    and 256 sequences. Capacity = concurrency / request latency, capped by prefill throughput, and
    0 when TTFT or TPOT at that concurrency misses the SLO. Not a measurement: shapes only.

    Returns:
        ``ProfileTable`` with the 8 variants of ``_A100_VARIANTS`` and the classes of ``SIX_CLASSES``.
    """
    params = 70e9
    kv_per_token = 320 * 1024
    variants = {}
    for name, prec, tp, bpp, prefill_slow in _A100_VARIANTS:
        eff = 0.8 ** (tp.bit_length() - 1)
        weights = int(params * bpp)
        mem_dev = int(0.9 * device_memory_bytes)
        kv_bytes = max(0, mem_dev * tp - weights)
        decode_base = weights / (2.0e12 * tp * eff)  # s per decode step (memory bound)
        prefill_tok = 2 * params / (312e12 * tp * eff * 0.5) * prefill_slow  # s per prompt token
        classes = {}
        for cname, (tin, tout) in SIX_CLASSES.items():
            conc = min(256, int(kv_bytes / (kv_per_token * (tin + tout))))
            step = decode_base * (1.0 + 0.004 * conc) + kv_per_token * conc * (tin + tout / 2) / (2.0e12 * tp * eff)
            ttft = prefill_tok * tin * 1.2
            latency = ttft + tout * step
            cap = conc / latency if latency > 0 else 0.0
            cap = min(cap, 0.7 / (prefill_tok * tin + 1e-12))
            ok = conc >= 1 and step <= tpot_slo_s and ttft <= ttft_slo_s
            classes[cname] = ClassProfile(capacity_rps=round(cap, 4) if ok else 0.0, ttft_s=ttft, tpot_s=step,
                                          max_concurrency=conc, throughput_tokens_s=conc / step if step else 0.0)
        variants[name] = VariantProfile(
            name=name, model="llama-70b-synthetic", precision=prec, tp=tp, device_type="a100-80gb",
            devices_per_replica=tp, memory_per_device_bytes=mem_dev, weights_bytes=weights, kv_cache_bytes=kv_bytes,
            kv_bytes_per_token=kv_per_token, max_num_seqs=256, max_num_batched_tokens=8192, max_model_len=16384,
            start_time_s=30.0 + weights / 2e9, iteration=IterationTimeModel(b=prefill_tok, d=decode_base),
            classes=classes,
        )
    return ProfileTable(source="modelled", created="2026-01-01", hardware={"synthetic": "true", "gpu": "a100-80gb"},
                        slo=SLO(ttft_s=ttft_slo_s, tpot_s=tpot_slo_s), class_names=list(SIX_CLASSES),
                        variants=variants)
