"""Calibrate the roofline's efficiency factors on public measurements and report held-out error.

Three layers, each a linear least-squares fit:

1. Collectives (Vidur ``network/{a100,h100}_dgx/all_reduce.csv``, intra-node rows, 2/4/8 GPUs):
   ``t = latency + 2 (n-1)/n * bytes / busbw`` -> ``allreduce_latency_s``, ``allreduce_busbw``.
2. Kernels (Vidur ``compute/{a100,h100}/**/mlp.csv``: per-layer sums of the non-attention op
   medians vs tokens, TP 1-8): ``t = weight_bytes/(BW mbu_k) + flops/(F mfu)`` -> ``mfu``.
3. Engine (LLM-Inference-Bench ``Plots/All_results.csv`` and ``Plots/Fig_3/A100_H100_quant_all
   _results.csv``, vLLM rows on A100/H100, TP 1-4, fp16 and fp8): each row is a static batch of
   ``B`` identical requests, input = output = ``L`` tokens. Its iteration schedule under vLLM's
   (mid-2024, v0) scheduler -- prefill-first, token budget ``max(max_model_len, 2048)``, KV
   blocks of 16 tokens, recompute preemption when blocks run out -- is simulated once; the
   batch latency is then linear in (1/mbu, step_overhead_s, per_seq_overhead_s) given ``mfu``
   from layer 2. Fitted by non-negative least squares on relative errors over the calibration
   split (a seeded 50% of rows); error reported on the other 50%.

A check (not a fit input): Vidur's decode-attention kernel timings (``legacy_a100_codellama34b
_tp2/attention.csv``) against the KV-read term with the engine-fitted A100 ``mbu``.

``Nvidia A100 GPU`` rows are modelled as A100-40GB SXM (the Argonne Polaris nodes the
benchmark ran on); ``Nvidia H100 GPU`` as H100-SXM 80GB.

Optionally (``--cpu-profile examples/profiles/cpu-smollm2.json``) the roofline's CPU mode is
checked against a measured profile: error with the default CPU factors, and with factors fitted
on half the variants and evaluated on the other half (``cpu_validation``).

Writes ``bench/results/calibration.json``. Run: ``python bench/calibrate.py`` (about 5 s).
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import math
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import nnls

from oserve.errors import ConfigError
from oserve.profiles.hardware import get_hardware
from oserve.profiles.roofline import BASIS_TERMS, roofline_basis
from oserve.profiles.variants import Variant, get_model

DATA = Path(os.environ.get("OSERVE_PROFILE_DATA", "/work/shared/data/profiles"))
OUT = Path(__file__).resolve().parent / "results" / "calibration.json"

HW_MAP = {"Nvidia A100 GPU": "a100-40gb", "Nvidia H100 GPU": "h100-sxm"}
FAMILY = {"a100-40gb": "a100", "h100-sxm": "h100"}
MODEL_MAP = {
    "meta-llama/Llama-2-7b-hf": "llama-2-7b",
    "meta-llama/Meta-Llama-3-8B": "llama-3-8b",
    "meta-llama/Llama-2-70b-hf": "llama-2-70b",
    "meta-llama/Meta-Llama-3-70B": "llama-3-70b",
    "mistralai/Mistral-7B-v0.1": "mistral-7b",
    "Qwen/Qwen2-7B": "qwen2-7b",
}


# ---------------------------------------------------------------- layer 1: collectives
def fit_allreduce(folder: str) -> dict:
    """Fit latency + bytes/busbw to Vidur's intra-node all-reduce medians of one machine type."""
    rows = list(csv.DictReader(open(DATA / "vidur" / "network" / folder / "all_reduce.csv")))
    xs, ys = [], []
    for r in rows:
        n = int(r["num_workers"])
        if int(r["devices_per_node"]) != n or n not in (2, 4, 8):
            continue
        size = float(r["size"])
        xs.append([1.0, 2.0 * (n - 1) / n * size])
        ys.append(float(r["time_stats.all_reduce.median"]) / 1e3)
    x, y = np.array(xs), np.array(ys)
    w = 1.0 / y
    coef, _ = nnls(x * w[:, None], y * w)
    pred = x @ coef
    rel = np.abs(pred / y - 1)
    return {"latency_s": coef[0], "busbw_bytes_s": 1.0 / coef[1], "median_rel_error": float(np.median(rel)),
            "points": len(y)}


# ---------------------------------------------------------------- layer 2: kernels
_OPS = ("input_layernorm", "attn_pre_proj", "attn_rope", "attn_post_proj", "post_attention_layernorm",
        "mlp_up_proj", "mlp_act", "mlp_down_proj", "add")


def fit_kernels(gpu: str, hw_name: str) -> dict:
    """Fit 1/mbu and 1/mfu to Vidur per-layer op sums: t = w_bytes/BW/mbu + flops/F/mfu."""
    hw = get_hardware(hw_name)
    xs, ys = [], []
    for path in glob.glob(str(DATA / "vidur" / "compute" / gpu / "*" / "*" / "mlp.csv")):
        for r in csv.DictReader(open(path)):
            if r.get("use_gated_mlp", "True") not in ("True", "true", "1"):
                continue
            h, inter = int(r["n_embd"]), int(r["n_expanded_embd"])
            heads, kvh = int(r["n_head"]), int(r["n_kv_head"])
            tp, t = int(r["num_tensor_parallel_workers"]), int(r["num_tokens"])
            kv = kvh * (h // heads)
            params = (h * (h + 2 * kv) + h * h + 3 * h * inter) / tp
            total = sum(float(r[f"time_stats.{op}.median"]) for op in _OPS if f"time_stats.{op}.median" in r
                        and r[f"time_stats.{op}.median"] != "")
            xs.append([params * 2 / hw.mem_bw_bytes_s, 2 * params * t / hw.flops("fp16")])
            ys.append(total / 1e3)
    x, y = np.array(xs), np.array(ys)
    w = 1.0 / y
    coef, _ = nnls(x * w[:, None], y * w)
    rel = np.abs(x @ coef / y - 1)
    return {"mbu_kernel": 1.0 / coef[0], "mfu": 1.0 / coef[1], "median_rel_error": float(np.median(rel)),
            "points": len(y)}


def check_attention_decode(engine_mbu: float) -> dict:
    """Vidur's measured decode-attention kernel (FlashAttention, A100-80GB, 64 q / 8 KV heads,
    TP2) against the roofline's KV-read term: ``t = batch * kv_tokens * kv_bytes_per_layer / (BW mbu)``.
    Fits (latency, 1/mbu) and also reports the error of the engine-calibrated ``mbu`` alone on
    kernels longer than 0.1 ms (where the fixed launch cost no longer dominates)."""
    hw = get_hardware("a100-80gb")
    xs, ys = [], []
    for r in csv.DictReader(open(DATA / "vidur" / "legacy_a100_codellama34b_tp2" / "attention.csv")):
        if r["is_prefill"] != "False" or not r["time_stats.attn_decode.median"]:
            continue
        kv_heads_dev = int(r["n_kv_head"]) // int(r["num_tensor_parallel_workers"])
        head_dim = int(r["n_embd"]) // int(r["n_q_head"])
        nbytes = int(r["batch_size"]) * int(r["kv_cache_size"]) * 2 * kv_heads_dev * head_dim * 2
        xs.append([1.0, nbytes / hw.mem_bw_bytes_s])
        ys.append(float(r["time_stats.attn_decode.median"]) / 1e3)
    x, y = np.array(xs), np.array(ys)
    coef, _ = nnls(x / y[:, None], np.ones_like(y))
    big = y > 1e-4
    pred_engine = x[big, 1] / engine_mbu
    return {"points": len(y), "fitted_latency_s": float(coef[0]), "fitted_mbu": float(1 / coef[1]),
            "fit_median_rel_error": float(np.median(np.abs(x @ coef / y - 1))),
            "engine_mbu": engine_mbu, "points_over_0.1ms": int(big.sum()),
            "engine_mbu_median_rel_error_over_0.1ms": float(np.median(np.abs(pred_engine / y[big] - 1)))}


# ---------------------------------------------------------------- layer 3: engine
@dataclass
class Point:
    hw: str
    model: str
    tp: int
    precision: str
    kv_dtype: str
    length: int
    batch: int
    latency_s: float
    throughput: float
    source: str


def load_points() -> list[Point]:
    """vLLM rows on A100/H100 of models with built-in architectures, TP <= 4."""
    pts: list[Point] = []
    base = DATA / "llm_inference_bench" / "Plots"
    for r in csv.DictReader(open(base / "All_results.csv")):
        if r["Framework"] != "vLLM" or r["Hardware"] not in HW_MAP or r["Model"] not in MODEL_MAP:
            continue
        tp = int(r["Num of Hardware"])
        if tp > 4:
            continue
        pts.append(Point(HW_MAP[r["Hardware"]], MODEL_MAP[r["Model"]], tp, "fp16", "auto",
                         int(r["Input Output Length"]), int(r["Batch Size"]), float(r["Latency"]),
                         float(r["Throughput"]), "All_results.csv"))
    seen = {(p.hw, p.model, p.tp, p.precision, p.kv_dtype, p.length, p.batch) for p in pts}
    with open(base / "Fig_3" / "A100_H100_quant_all_results.csv") as fh:
        for r in csv.DictReader(line for line in fh if line.strip()):
            if r["Framework"] != "vLLM" or r["Hardware"] not in HW_MAP or r["Model"] not in MODEL_MAP:
                continue
            kv = r["kv_cache_dtype"].replace(" ", "").lower()
            prec = "fp8" if "weight=fp8" in kv else "fp16"
            kvd = "fp8" if "kvcache=fp8" in kv else "auto"
            key = (HW_MAP[r["Hardware"]], MODEL_MAP[r["Model"]], int(r["Num of Hardware"]), prec, kvd,
                   int(r["Input Output Length"]), int(r["Batch Size"]))
            if key in seen:
                continue
            seen.add(key)
            pts.append(Point(*key, float(r["latency"]), float(r["throughput"]),
                             "Fig_3/A100_H100_quant_all_results.csv"))
    return pts


def point_variant(p: Point) -> Variant:
    arch = get_model(p.model)
    max_len = arch.max_position_embeddings
    return Variant(model=arch, precision=p.precision, kv_cache_dtype=p.kv_dtype, tp=p.tp, device_type=p.hw,
                   max_num_seqs=256, max_model_len=max_len, max_num_batched_tokens=max(max_len, 2048))


def schedule_features(n_req: int, length: int, kv_tokens: int, max_num_seqs: int, budget: int,
                      block: int = 16) -> np.ndarray:
    """Simulate vLLM v0's scheduler on a static batch; return summed iteration features.

    Returns:
        ``[prefill iterations, sum prefill tokens, sum per-sequence prefill tokens^2,
        decode iterations, sum decode batch, sum KV tokens read]`` (shape ``(6,)``).
    """
    total_blocks = kv_tokens // block
    watermark = max(1, int(0.01 * total_blocks))
    waiting: list[list[int]] = [[length, 0] for _ in range(n_req)]  # [tokens in context, generated]
    running: list[list[int]] = []
    feats = np.zeros(6)

    def blocks(n: int) -> int:
        return -(-n // block)

    used = 0
    while waiting or running:
        # prefill-first: admit as many waiting sequences as budget, seqs and blocks allow
        admitted: list[list[int]] = []
        tokens = 0
        while waiting and len(running) + len(admitted) < max_num_seqs:
            s = waiting[0]
            need = blocks(s[0])
            if tokens + s[0] > budget or used + need > total_blocks - watermark:
                break
            waiting.pop(0)
            used += need
            tokens += s[0]
            admitted.append(s)
        if admitted:
            feats[0] += 1
            feats[1] += tokens
            feats[2] += sum(s[0] ** 2 for s in admitted)
            for s in admitted:
                s[1] += 1  # prefill emits the first token
            running.extend(admitted)
        else:
            if not running:
                raise RuntimeError("a single sequence does not fit the KV cache")
            # decode: each running sequence appends one token; a token landing on a block
            # boundary needs a new block; preempt the newest sequences until they fit
            need = sum(1 for s in running if s[0] % block == 0)
            while used + need > total_blocks and len(running) > 1:
                victim = running.pop()
                used -= blocks(victim[0])
                need -= 1 if victim[0] % block == 0 else 0
                waiting.insert(0, victim)
            used += need
            feats[3] += 1
            feats[4] += len(running)
            feats[5] += sum(s[0] for s in running)
            for s in running:
                s[0] += 1
                s[1] += 1
        # retire finished sequences
        done = [s for s in running if s[1] >= length]
        if done:
            running = [s for s in running if s[1] < length]
            used -= sum(blocks(s[0]) for s in done)
    return feats


def term_matrix(p: Point, v: Variant) -> np.ndarray:
    """Batch latency = sum over terms of (basis_term . schedule features): returns shape (5,)."""
    feats = schedule_features(p.batch, p.length, v.kv_capacity_tokens, v.max_num_seqs, v.max_num_batched_tokens)
    basis = roofline_basis(v)
    return np.array([basis[t] @ feats for t in BASIS_TERMS])


def fit_engine(terms: np.ndarray, y: np.ndarray, mfu: float) -> np.ndarray:
    """NNLS for (1/mbu, step_overhead_s, per_seq_overhead_s) on relative error; terms (n, 5)."""
    rhs = (y - terms[:, 0] - terms[:, 1] / mfu) / y
    a = terms[:, 2:] / y[:, None]
    coef, _ = nnls(a, rhs)
    return coef


def predict(terms: np.ndarray, mfu: float, coef: np.ndarray) -> np.ndarray:
    return terms[:, 0] + terms[:, 1] / mfu + terms[:, 2:] @ coef


def _cpu_rows(table_path: Path) -> list[tuple[Variant, np.ndarray, float]]:
    """(variant, feature vector (6,), measured s) per raw sweep point of a measured CPU profile."""
    from oserve.profiles.table import ProfileTable

    table = ProfileTable.load(table_path)
    state_path = table_path.with_name(table_path.name + ".sweep.json")
    raw = json.loads(state_path.read_text())["variants"] if state_path.exists() else {}
    rows = []
    for name, vp in table.variants.items():
        v = Variant(model=vp.model, precision=vp.precision, device_type="cpu",
                    devices_per_replica=vp.devices_per_replica, max_num_seqs=vp.max_num_seqs,
                    max_model_len=vp.max_model_len,
                    max_num_batched_tokens=vp.max_num_batched_tokens)
        pts = raw.get(name, {})
        prefill = pts.get("prefill") or [(t, vp.iteration.prefill_s(t)) for t in (16, 128, 512, 1024)]
        decode = pts.get("decode") or [(b, b * 96, vp.iteration.decode_step_s(b, b * 96)) for b in (1, 2, 4, 8)]
        for t, sec in prefill:
            rows.append((v, np.array([1.0, t, t * t, 0, 0, 0]), float(sec)))
        for b, k, sec in decode:
            rows.append((v, np.array([0, 0, 0, 1.0, b, k]), float(sec)))
    return rows


def validate_cpu(table_path: Path) -> dict:
    """CPU mode of the roofline vs a measured profile: error with default factors, and with factors
    fitted on the even-indexed variants, evaluated on the odd-indexed (held-out) ones."""
    from oserve.profiles.roofline import DEFAULT_EFFICIENCY

    rows = _cpu_rows(table_path)
    names = sorted({v.name for v, _, _ in rows})
    held = {n for i, n in enumerate(names) if i % 2 == 1}
    terms = np.array([[roofline_basis(v)[t] @ f for t in BASIS_TERMS] for v, f, _ in rows])
    y = np.array([sec for _, _, sec in rows])
    is_held = np.array([v.name in held for v, _, _ in rows])
    eff = DEFAULT_EFFICIENCY["cpu"]
    default_pred = terms[:, 0] + terms[:, 1] / eff.mfu + terms[:, 2] / eff.mbu + terms[:, 3] * eff.step_overhead_s \
        + terms[:, 4] * eff.per_seq_overhead_s
    cal = ~is_held if is_held.any() else np.ones_like(is_held)
    coef, _ = nnls(terms[cal, 1:] / y[cal, None], (y[cal] - terms[cal, 0]) / y[cal])
    fitted_pred = terms[:, 0] + terms[:, 1:] @ coef
    ev = is_held if is_held.any() else cal
    return {
        "profile": str(table_path),
        "points": int(len(y)),
        "default_factors_median_abs_error": float(np.median(np.abs(default_pred / y - 1))),
        "fitted_factors": {"mfu": 1 / coef[0] if coef[0] else None, "mbu": 1 / coef[1] if coef[1] else None,
                           "step_overhead_s": float(coef[2]), "per_seq_overhead_s": float(coef[3])},
        "heldout_variants": sorted(held),
        "heldout_median_abs_error": float(np.median(np.abs(fitted_pred[ev] / y[ev] - 1))),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--holdout", type=float, default=0.5, help="fraction of engine points held out")
    ap.add_argument("-o", "--out", default=str(OUT))
    ap.add_argument("--cpu-profile", type=Path, help="measured CPU profile table to validate the CPU mode on")
    args = ap.parse_args()

    result: dict = {"data": str(DATA), "seed": args.seed, "holdout_fraction": args.holdout}
    result["allreduce"] = {"a100": fit_allreduce("a100_dgx"), "h100": fit_allreduce("h100_dgx")}
    result["kernels"] = {"a100": fit_kernels("a100", "a100-80gb"), "h100": fit_kernels("h100", "h100-sxm")}

    pts = load_points()
    rng = np.random.default_rng(args.seed)
    held = rng.random(len(pts)) < args.holdout
    terms, ok, excluded = [], [], []
    for p in pts:
        try:
            terms.append(term_matrix(p, point_variant(p)))
            ok.append(True)
        except (ConfigError, RuntimeError) as exc:  # a variant the model rejects or cannot fit
            terms.append(np.full(5, np.nan))
            ok.append(False)
            excluded.append({**p.__dict__, "reason": str(exc)})
    result["excluded_points"] = excluded
    t_all = np.array(terms)
    y_all = np.array([p.latency_s for p in pts])
    ok_a = np.array(ok)
    per_point = []
    factors = {}
    for fam in ("a100", "h100"):
        sel = np.array([FAMILY[p.hw] == fam for p in pts]) & ok_a
        mfu = float(result["kernels"][fam]["mfu"])
        cal = sel & ~held
        coef = fit_engine(t_all[cal], y_all[cal], mfu)
        factors[fam] = {"mfu": mfu, "mbu": 1.0 / coef[0] if coef[0] > 0 else None,
                        "step_overhead_s": float(coef[1]), "per_seq_overhead_s": float(coef[2]),
                        "calibration_points": int(cal.sum()), "heldout_points": int((sel & held).sum())}
        pred = predict(t_all[sel], mfu, coef)
        for p, yp, h in zip([q for q, s in zip(pts, sel, strict=True) if s], pred, held[sel], strict=True):
            tput_pred = p.batch * 2 * p.length / yp
            per_point.append({
                "hardware": p.hw, "model": p.model, "tp": p.tp, "precision": p.precision, "kv_cache_dtype": p.kv_dtype,
                "length": p.length, "batch": p.batch, "measured_tokens_s": round(p.throughput, 2),
                "modelled_tokens_s": round(tput_pred, 2), "rel_error": round(tput_pred / p.throughput - 1, 4),
                "heldout": bool(h), "source": p.source,
            })
    result["factors"] = factors
    result["attention_decode_check"] = check_attention_decode(float(factors["a100"]["mbu"]))
    herr = [abs(q["rel_error"]) for q in per_point if q["heldout"]]
    cerr = [abs(q["rel_error"]) for q in per_point if not q["heldout"]]
    result["heldout_median_abs_error"] = float(np.median(herr))
    result["heldout_p90_abs_error"] = float(np.quantile(herr, 0.9))
    result["calibration_median_abs_error"] = float(np.median(cerr))
    by = defaultdict(list)
    for q in per_point:
        if q["heldout"]:
            by[f"{q['hardware']}/{q['model']}/tp{q['tp']}/{q['precision']}"].append(abs(q["rel_error"]))
    result["heldout_median_abs_error_by_group"] = {k: round(float(np.median(v)), 4) for k, v in sorted(by.items())}
    repro = [q for q in per_point if q["hardware"] == "a100-40gb" and q["model"] == "llama-2-7b"
             and q["length"] == 1024 and q["batch"] == 64 and q["precision"] == "fp16"
             and q["kv_cache_dtype"] == "auto"]
    result["llama2_7b_a100_in_out_1024_batch64"] = {
        "note": "throughput = batch * 2 * length / latency (input + output tokens/s, the benchmark's definition)",
        "points": sorted(repro, key=lambda q: q["tp"]),
    }
    if args.cpu_profile:
        result["cpu_validation"] = validate_cpu(args.cpu_profile)
        print("cpu validation:", json.dumps(result["cpu_validation"], indent=1, default=float))
    result["per_point"] = per_point
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1, default=float))
    print(json.dumps({k: result[k] for k in ("allreduce", "kernels", "factors", "attention_decode_check",
                                              "heldout_median_abs_error",
                                              "calibration_median_abs_error", "heldout_median_abs_error_by_group")},
                     indent=1, default=float))
    for q in result["llama2_7b_a100_in_out_1024_batch64"]["points"]:
        print(f"llama-2-7b A100 tp{q['tp']}: measured {q['measured_tokens_s']:.0f} "
              f"modelled {q['modelled_tokens_s']:.0f}"
              f" tok/s ({q['rel_error']:+.1%}, heldout={q['heldout']})")
    if not math.isfinite(result["heldout_median_abs_error"]):
        raise SystemExit("no held-out points")


if __name__ == "__main__":
    main()
