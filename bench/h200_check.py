"""Compare oserve's roofline to the H200 microbenchmark and fit H200 efficiency factors.

Input: ``bench/results/h200_microbench.json`` (``bench/gpu/h200_microbench.py``, run once on one
NVIDIA H200, PyTorch 2.11 eager, 2026-11-29): Llama-3-8B decoder layers with random bf16 weights,
prefill of one sequence of T = 256/1024/4096 tokens and one decode step at batch B = 1..256 with
L = 1,024 KV tokens per sequence.

Model side: the roofline's own basis (:func:`oserve.profiles.roofline.roofline_basis`) for a
``Variant`` on the ``h200`` hardware entry whose architecture is Llama-3-8B's 32 decoder layers
without embeddings or LM head (``vocab=1``, ``params`` = the linear-layer parameters), which is
what the microbenchmark's 32-layer stack runs. Prefill ``a + b T + c T^2``; decode
``d + e B + f (B L)``. Measured side: the 32-layer stack with distinct weights (prefill: eager;
decode: replayed CUDA graph, eager as fallback); the per-layer time x 32 is reported beside it.

Predictions are kernel-level: ``const + compute / mfu + memory / mbu`` with the engine overheads
(``step_overhead_s``, ``per_seq_overhead_s``: vLLM scheduling/sampling, absent in a PyTorch loop)
set to zero. Compared:

* ``before``: H100's calibrated mfu/mbu, which the H200 entry borrowed until this fit;
* ``fit``: ``1/mfu`` and ``1/mbu`` fitted by non-negative least squares on relative error over
  all 9 points (the same form and weighting as ``bench/calibrate.py``), with the leave-one-out
  error as the honest figure;
* ``fit_with_step`` (diagnostic): the same plus a fixed per-iteration time, to show how much of
  the residual is per-step kernel-launch/small-kernel cost.

Also reported for reference: the full H100-factor model (with its engine overheads) against
the same points; it is expected to overpredict, as the microbenchmark has no engine.

Writes ``bench/results/h200_check.json``. Run: ``python bench/h200_check.py`` (about 1 s).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy.optimize import nnls

from oserve.profiles.roofline import BASIS_TERMS, DEFAULT_EFFICIENCY, efficiency_for, roofline_basis
from oserve.profiles.variants import Variant, get_model

RESULTS = Path(__file__).resolve().parent / "results"


def layer_stack_variant() -> Variant:
    """Llama-3-8B's 32 decoder layers (no embeddings / LM head) in bf16 on one H200."""
    base = get_model("llama-3-8b")
    arch = base.model_copy(update={"name": "llama-3-8b-layers", "vocab": 1, "params": base.linear_params})
    return Variant(model=arch, precision="bf16", device_type="h200", max_model_len=8192)


def points(bench: dict) -> list[dict]:
    """Measured points: kind, shape, measured seconds (stack and per-layer x 32)."""
    out = []
    for r in bench["prefill"]:
        out.append({"kind": "prefill", "tokens": r["tokens"], "measured_s": r["stack"]["median_s"],
                    "measured_layer_x32_s": r["layer"]["whole_model_s"], "timing": "eager stack"})
    for r in bench["decode"]:
        g = r.get("stack_graph", {})
        graph = "median_s" in g
        out.append({"kind": "decode", "batch": r["batch"], "kv_tokens": r["kv_tokens"],
                    "measured_s": g["median_s"] if graph else r["stack"]["median_s"],
                    "measured_eager_s": r["stack"]["median_s"],
                    "measured_layer_x32_s": r["layer"]["whole_model_s"],
                    "timing": "CUDA-graph stack" if graph else "eager stack"})
    return out


def basis_rows(basis: dict[str, np.ndarray], pts: list[dict]) -> dict[str, np.ndarray]:
    """Each basis term evaluated at each point: prefill a+bT+cT^2, decode d+eB+fK. Shape (n,)."""
    rows: dict[str, list[float]] = {k: [] for k in BASIS_TERMS}
    for p in pts:
        for k in BASIS_TERMS:
            v = basis[k]
            if p["kind"] == "prefill":
                t = p["tokens"]
                rows[k].append(v[0] + v[1] * t + v[2] * t * t)
            else:
                rows[k].append(v[3] + v[4] * p["batch"] + v[5] * p["kv_tokens"])
    return {k: np.array(x) for k, x in rows.items()}


def predict(rows: dict[str, np.ndarray], mfu: float, mbu: float, step_s: float = 0.0, seq_s: float = 0.0) -> np.ndarray:
    """Roofline time at every point for the given factors, seconds."""
    return rows["const"] + rows["compute"] / mfu + rows["memory"] / mbu + rows["step"] * step_s + rows["seq"] * seq_s


def fit(rows: dict[str, np.ndarray], meas: np.ndarray, idx: np.ndarray, with_step: bool) -> dict:
    """NNLS on relative error over points ``idx``: returns mfu, mbu (and step_s)."""
    cols = ["compute", "memory"] + (["step"] if with_step else [])
    x = np.stack([rows[c][idx] for c in cols], axis=1) / meas[idx, None]
    y = 1.0 - rows["const"][idx] / meas[idx]
    coef, _ = nnls(x, y)
    res = {"mfu": 1.0 / coef[0] if coef[0] > 0 else float("inf"), "mbu": 1.0 / coef[1] if coef[1] > 0 else float("inf")}
    if with_step:
        res["step_s"] = float(coef[2])
    return res


def rel_err(pred: np.ndarray, meas: np.ndarray) -> np.ndarray:
    return pred / meas - 1.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bench", default=str(RESULTS / "h200_microbench.json"))
    ap.add_argument("--out", default=str(RESULTS / "h200_check.json"))
    args = ap.parse_args(argv)

    bench = json.loads(Path(args.bench).read_text())
    variant = layer_stack_variant()
    pts = points(bench)
    rows = basis_rows(roofline_basis(variant), pts)
    meas = np.array([p["measured_s"] for p in pts])
    meas32 = np.array([p["measured_layer_x32_s"] for p in pts])
    n = len(pts)
    allidx = np.arange(n)
    eff = DEFAULT_EFFICIENCY["h100"]  # what H200 borrowed before this fit
    current = efficiency_for("h200")

    before = predict(rows, eff.mfu, eff.mbu)
    before_engine = predict(rows, eff.mfu, eff.mbu, eff.step_overhead_s, eff.per_seq_overhead_s)
    f2 = fit(rows, meas, allidx, with_step=False)
    after = predict(rows, f2["mfu"], f2["mbu"])
    f3 = fit(rows, meas, allidx, with_step=True)
    after3 = predict(rows, f3["mfu"], f3["mbu"], step_s=f3["step_s"])
    loo = np.empty(n)
    for i in range(n):
        fi = fit(rows, meas, np.delete(allidx, i), with_step=False)
        loo[i] = rel_err(predict(rows, fi["mfu"], fi["mbu"]), meas)[i]
    f2_layer = fit(rows, meas32, allidx, with_step=False)

    e_before, e_after, e_after3 = rel_err(before, meas), rel_err(after, meas), rel_err(after3, meas)
    e_engine = rel_err(before_engine, meas)
    per_point = []
    for i, p in enumerate(pts):
        per_point.append(dict(p, predicted_before_s=float(before[i]), err_before=float(e_before[i]),
                              predicted_after_s=float(after[i]), err_after=float(e_after[i]),
                              err_after_leave_one_out=float(loo[i]), err_after_with_step=float(e_after3[i]),
                              err_default_with_engine_overheads=float(e_engine[i])))

    def med(e: np.ndarray) -> float:
        return float(np.median(np.abs(e)))

    def rms(e: np.ndarray) -> float:
        return float(np.sqrt(np.mean(e * e)))

    out = {
        "source": "bench/results/h200_microbench.json (one H200, PyTorch eager, 2026-11-29); not vLLM",
        "model": "roofline_basis of Llama-3-8B's 32 decoder layers (no embeddings/LM head), bf16, tp1, h200 entry "
        f"(peak {variant.hardware.flops('fp16') / 1e12:.1f} TFLOP/s, {variant.hardware.mem_bw_bytes_s / 1e12:.2f} TB/s)",
        "measured": "32-layer stack with distinct weights; decode from the replayed CUDA graph",
        "reference_rates": {"gemm_8192_tflops": bench["gemm"]["tflops"],
                            "copy_read_plus_write_gb_s": bench["copy"]["read_plus_write_gb_s"],
                            "gemm_fraction_of_peak": bench["gemm"]["tflops"] * 1e12 / variant.hardware.flops("fp16"),
                            "copy_fraction_of_peak": bench["copy"]["read_plus_write_gb_s"] * 1e9
                            / variant.hardware.mem_bw_bytes_s},
        "factors_before": {"mfu": eff.mfu, "mbu": eff.mbu, "source": eff.source},
        "factors_fitted": f2,
        "factors_current_default": {"mfu": current.mfu, "mbu": current.mbu, "source": current.source},
        "factors_fitted_with_step": f3,
        "factors_fitted_on_layer_x32": f2_layer,
        "median_abs_error_before": med(e_before),
        "median_abs_error_after": med(e_after),
        "median_abs_error_after_leave_one_out": med(loo),
        "rms_error_before": rms(e_before),
        "rms_error_after": rms(e_after),
        "max_abs_error_before": float(np.max(np.abs(e_before))),
        "max_abs_error_after": float(np.max(np.abs(e_after))),
        "median_abs_error_after_with_step": med(e_after3),
        "median_abs_error_default_with_engine_overheads": med(e_engine),
        "stack_vs_layer_x32_median_abs_diff": med(meas32 / meas - 1.0),
        "per_point": per_point,
    }
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"factors before: mfu {eff.mfu:.3f} mbu {eff.mbu:.3f}; fitted: mfu {f2['mfu']:.3f} mbu {f2['mbu']:.3f}; "
          f"with step: mfu {f3['mfu']:.3f} mbu {f3['mbu']:.3f} step {f3['step_s'] * 1e3:.3f} ms")
    print(f"{'point':>16} {'meas ms':>9} {'before':>8} {'after':>8} {'LOO':>8} {'+step':>8}")
    for p in per_point:
        name = f"prefill T={p['tokens']}" if p["kind"] == "prefill" else f"decode B={p['batch']}"
        print(f"{name:>16} {p['measured_s'] * 1e3:9.3f} {p['err_before']:+8.1%} {p['err_after']:+8.1%} "
              f"{p['err_after_leave_one_out']:+8.1%} {p['err_after_with_step']:+8.1%}")
    print(f"median |err|: before {out['median_abs_error_before']:.1%}, after {out['median_abs_error_after']:.1%} "
          f"(leave-one-out {out['median_abs_error_after_leave_one_out']:.1%}), with step "
          f"{out['median_abs_error_after_with_step']:.1%}; default incl. engine overheads "
          f"{out['median_abs_error_default_with_engine_overheads']:.1%}")
    print(f"rms: before {out['rms_error_before']:.1%}, after {out['rms_error_after']:.1%}; max |err|: before "
          f"{out['max_abs_error_before']:.1%}, after {out['max_abs_error_after']:.1%}; stack vs layer x 32: "
          f"{out['stack_vs_layer_x32_median_abs_diff']:.1%} (median abs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
