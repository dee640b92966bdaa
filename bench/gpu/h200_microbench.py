"""PyTorch eager microbenchmark of Llama-3-8B decoder layers on one GPU (made for one H200 run).

Measures, with random bf16 weights shaped like Llama-3-8B (hidden 4096, 32 heads, 8 KV heads,
head dim 128, intermediate 14336; QKV, O, gate/up, down projections, two RMSNorms, SDPA):

* prefill of one sequence of ``T`` tokens (causal attention), ``T`` in 256, 1024, 4096;
* one decode step of a batch of ``B`` sequences (``B`` in 1, 8, 32, 64, 128, 256) whose KV cache
  holds ``L = 1024`` tokens each (attention reads K/V of shape ``(B, 8, L, 128)`` per layer; the
  new token's K/V is written into position ``L - 1`` first);
* references: the 8192^3 bf16 GEMM rate (TFLOP/s) and a device-to-device copy bandwidth
  (GB/s, bytes read + written, and bytes read alone).

Each shape is timed two ways:

* ``layer``: ONE decoder layer (layer 0), repeated; the whole-model time is this x 32 layers
  (the usual per-layer scaling; embeddings and the LM head are not included);
* ``stack``: a stack of 32 layers with DISTINCT weights and KV caches (what the scaling stands
  for, without L2-cache reuse between repeats). Decode is also timed as a replayed CUDA graph
  of the stack (``stack_graph``), which removes Python/launch overhead.

Timing: CUDA events around each call, after warm-ups; the median of the repeats is reported, in
seconds. What it is NOT: vLLM. No paged-attention or FlashInfer kernels, no fused RoPE (RoPE
is left out: elementwise, < 1% of the FLOPs and bytes), no sampling, no scheduler; eager
launches except in ``stack_graph``.

GQA: prefill repeats K/V to 32 heads (``repeat_interleave``, then flash SDPA, causal); decode
folds the 4 query heads of each KV group into the query-length axis, ``q (B, 8, 4, 128)``
against ``K/V (B, 8, L, 128)``, which is exact for one new token and copies no KV.

Dependencies: torch and numpy only (runs on the device image). Run::

    python3 h200_microbench.py --out h200_microbench.json          # GPU, < 2 min on an H200
    python3 h200_microbench.py --device cpu --tiny --out /tmp/x.json  # logic check on CPU
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

LLAMA3_8B = {"hidden": 4096, "heads": 32, "kv_heads": 8, "head_dim": 128, "intermediate": 14336, "layers": 32}
TINY = {"hidden": 256, "heads": 8, "kv_heads": 2, "head_dim": 32, "intermediate": 512, "layers": 2}


class Layer:
    """One Llama decoder layer's weights (bf16, ``F.linear`` layout ``(out, in)``)."""

    def __init__(self, cfg: dict, device: str, dtype: torch.dtype, gen: torch.Generator | None) -> None:
        h, hd, kv, inter = cfg["hidden"], cfg["head_dim"], cfg["kv_heads"], cfg["intermediate"]
        self.cfg = cfg
        std = 0.02

        def w(*shape: int) -> torch.Tensor:
            return (torch.randn(*shape, device=device, dtype=dtype, generator=gen) * std)

        self.wqkv = w(h + 2 * kv * hd, h)
        self.wo = w(h, h)
        self.wgu = w(2 * inter, h)
        self.wdown = w(h, inter)
        self.norm1 = torch.ones(h, device=device, dtype=dtype)
        self.norm2 = torch.ones(h, device=device, dtype=dtype)

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c = self.cfg
        qkv = F.linear(F.rms_norm(x, (c["hidden"],), self.norm1, 1e-5), self.wqkv)
        q_dim, kv_dim = c["heads"] * c["head_dim"], c["kv_heads"] * c["head_dim"]
        return qkv[..., :q_dim], qkv[..., q_dim:q_dim + kv_dim], qkv[..., q_dim + kv_dim:]

    def _mlp(self, x: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        gu = F.linear(F.rms_norm(x, (c["hidden"],), self.norm2, 1e-5), self.wgu)
        g, u = gu[..., :c["intermediate"]], gu[..., c["intermediate"]:]
        return x + F.linear(F.silu(g) * u, self.wdown)

    def prefill(self, x: torch.Tensor) -> torch.Tensor:
        """One sequence: ``x (T, hidden)`` -> ``(T, hidden)``; causal flash SDPA, K/V repeated."""
        c = self.cfg
        t = x.shape[0]
        q, k, v = self._qkv(x)
        q = q.view(t, c["heads"], c["head_dim"]).transpose(0, 1).unsqueeze(0)
        k = k.reshape(t, c["kv_heads"], c["head_dim"]).transpose(0, 1).unsqueeze(0)
        v = v.reshape(t, c["kv_heads"], c["head_dim"]).transpose(0, 1).unsqueeze(0)
        rep = c["heads"] // c["kv_heads"]
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        o = o.squeeze(0).transpose(0, 1).reshape(t, c["hidden"])
        x = x + F.linear(o, self.wo)
        return self._mlp(x)

    def decode(self, x: torch.Tensor, kcache: torch.Tensor, vcache: torch.Tensor) -> torch.Tensor:
        """One decode step: ``x (B, hidden)``, caches ``(B, kv_heads, L, head_dim)`` -> ``(B, hidden)``.

        Writes the new K/V at position ``L - 1``, then attends over all ``L`` cached tokens.
        """
        c = self.cfg
        b = x.shape[0]
        rep = c["heads"] // c["kv_heads"]
        q, k, v = self._qkv(x)
        kcache[:, :, -1, :] = k.view(b, c["kv_heads"], c["head_dim"])
        vcache[:, :, -1, :] = v.view(b, c["kv_heads"], c["head_dim"])
        q = q.view(b, c["kv_heads"], rep, c["head_dim"])  # GQA group g = query heads 4g..4g+3
        o = F.scaled_dot_product_attention(q, kcache, vcache)
        x = x + F.linear(o.reshape(b, c["hidden"]), self.wo)
        return self._mlp(x)


def make_timer(device: str) -> Callable[[Callable[[], object], int, int], list[float]]:
    """A timer returning per-call seconds: CUDA events on GPU, perf_counter on CPU."""

    def cuda_timer(fn: Callable[[], object], warmup: int, repeats: int) -> list[float]:
        for _ in range(warmup):
            fn()
        torch.cuda.synchronize()
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
        for s, e in zip(starts, ends, strict=True):
            s.record()
            fn()
            e.record()
        torch.cuda.synchronize()
        return [s.elapsed_time(e) / 1e3 for s, e in zip(starts, ends, strict=True)]

    def cpu_timer(fn: Callable[[], object], warmup: int, repeats: int) -> list[float]:
        for _ in range(warmup):
            fn()
        out = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
        return out

    return cuda_timer if device.startswith("cuda") else cpu_timer


def summary(ts: list[float]) -> dict:
    return {"median_s": statistics.median(ts), "min_s": min(ts), "max_s": max(ts), "repeats": len(ts)}


def layer_counts(cfg: dict, kind: str, n: int, kv_len: int = 0) -> dict:
    """FLOPs and DRAM bytes of ONE layer (analytic, for the achieved-rate columns only).

    Linear FLOPs: 2 x linear weights x tokens. Attention: prefill causal 2 x 2 x T^2/2 x hidden
    (QK^T and PV, half the matrix); decode 2 x 2 x L x hidden per sequence. Bytes: bf16 weights
    once, plus (decode) the K/V cache read, 2 x B x L x kv_heads x head_dim x 2.
    """
    h, kvd, inter = cfg["hidden"], cfg["kv_heads"] * cfg["head_dim"], cfg["intermediate"]
    params = h * (h + 2 * kvd) + h * h + 3 * h * inter
    if kind == "prefill":
        flops = 2.0 * params * n + 2.0 * h * n * n
        kv_bytes = 0.0
    else:
        flops = 2.0 * params * n + 4.0 * n * kv_len * h
        kv_bytes = 2.0 * n * kv_len * kvd * 2
    return {"linear_params": params, "flops": flops, "weight_bytes": 2.0 * params, "kv_bytes": kv_bytes}


def graph_time(fn: Callable[[], object], device: str, timer: Callable, warmup: int, repeats: int) -> dict:
    """Time ``fn`` replayed as one CUDA graph (static inputs captured by ``fn``'s closure)."""
    if not device.startswith("cuda"):
        return {"skipped": "CUDA graphs need a GPU"}
    try:
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(2):
                fn()
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            fn()
        res = summary(timer(g.replay, warmup, repeats))
        del g
        return res
    except Exception as exc:  # noqa: BLE001 - record and continue: the eager numbers still stand
        return {"error": f"{type(exc).__name__}: {exc}"[:300]}


def kernel_names(fn: Callable[[], object], device: str) -> list[str]:
    """Names of the GPU kernels one call of ``fn`` launches (torch.profiler), for the record."""
    if not device.startswith("cuda"):
        return []
    try:
        from torch.profiler import ProfilerActivity, profile

        fn()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            fn()
            torch.cuda.synchronize()
        names = sorted({e.key for e in prof.key_averages() if e.device_type.name == "CUDA"})
        return [n[:120] for n in names][:40]
    except Exception as exc:  # noqa: BLE001
        return [f"profiler failed: {type(exc).__name__}: {exc}"[:200]]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true", help="small shapes (logic check on CPU)")
    p.add_argument("--out", default=os.path.join(os.environ.get("OUT", "."), "h200_microbench.json"))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    t_start = time.perf_counter()
    dev = args.device
    cfg = TINY if args.tiny else LLAMA3_8B
    dtype = torch.bfloat16
    prefill_ts = [16, 64] if args.tiny else [256, 1024, 4096]
    batches = [1, 4] if args.tiny else [1, 8, 32, 64, 128, 256]
    kv_len = 32 if args.tiny else 1024
    gemm_n = 256 if args.tiny else 8192
    copy_bytes = (8 << 20) if args.tiny else (4 << 30)
    warmup, reps, stack_reps = (1, 3, 2) if args.tiny else (3, 20, 10)
    timer = make_timer(dev)
    sync = torch.cuda.synchronize if dev.startswith("cuda") else (lambda: None)
    gen = torch.Generator(device=dev)
    gen.manual_seed(args.seed)
    torch.backends.cuda.matmul.allow_tf32 = False

    res: dict = {
        "what": "PyTorch eager microbenchmark of Llama-3-8B decoder layers (random bf16 weights); not vLLM",
        "config": dict(cfg, dtype="bf16", kv_len_decode=kv_len, tiny=args.tiny),
        "scaling": "whole_model_s = per-layer time x layers (32); embeddings and LM head excluded. "
        "'stack' rows time 32 distinct layers directly",
        "timing": f"CUDA events, {warmup} warm-ups, median of {reps} repeats (stack: {stack_reps})",
        "env": {
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "python": platform.python_version(),
            "device": dev,
        },
    }
    if dev.startswith("cuda"):
        props = torch.cuda.get_device_properties(0)
        res["env"].update(
            gpu=torch.cuda.get_device_name(0), sm_count=props.multi_processor_count,
            memory_bytes=props.total_memory, capability=f"{props.major}.{props.minor}",
            cudnn=torch.backends.cudnn.version(),
        )
    print(json.dumps(res["env"]), flush=True)

    # ---- references: GEMM and copy
    a = torch.randn(gemm_n, gemm_n, device=dev, dtype=dtype, generator=gen)
    b = torch.randn(gemm_n, gemm_n, device=dev, dtype=dtype, generator=gen)
    ts = timer(lambda a=a, b=b: a @ b, warmup, reps)
    res["gemm"] = dict(summary(ts), n=gemm_n, tflops=2 * gemm_n**3 / statistics.median(ts) / 1e12)
    del a, b
    src = torch.empty(copy_bytes // 2, device=dev, dtype=dtype)
    src.fill_(1.0)
    dst = torch.empty_like(src)
    ts = timer(lambda src=src, dst=dst: dst.copy_(src), warmup, reps)
    med = statistics.median(ts)
    res["copy"] = dict(summary(ts), bytes=copy_bytes, read_plus_write_gb_s=2 * copy_bytes / med / 1e9,
                       read_gb_s=copy_bytes / med / 1e9)
    del src, dst
    print(f"gemm {res['gemm']['tflops']:.1f} TFLOP/s; copy {res['copy']['read_plus_write_gb_s']:.0f} GB/s r+w",
          flush=True)

    # ---- model: 32 layers of distinct weights and KV caches
    nl = cfg["layers"]
    layers = [Layer(cfg, dev, dtype, gen) for _ in range(nl)]
    bmax = max(batches)
    kshape = (bmax, cfg["kv_heads"], kv_len, cfg["head_dim"])
    kc = [torch.randn(kshape, device=dev, dtype=dtype, generator=gen) for _ in range(nl)]
    vc = [torch.randn(kshape, device=dev, dtype=dtype, generator=gen) for _ in range(nl)]
    sync()

    prefill = []
    for t in prefill_ts:
        x = torch.randn(t, cfg["hidden"], device=dev, dtype=dtype, generator=gen)

        def one(x: torch.Tensor = x) -> torch.Tensor:
            return layers[0].prefill(x)

        def stack(x: torch.Tensor = x) -> torch.Tensor:
            for lay in layers:
                x = lay.prefill(x)
            return x

        row = {"tokens": t, "counts_per_layer": layer_counts(cfg, "prefill", t)}
        row["layer"] = summary(timer(one, warmup, reps))
        row["layer"]["whole_model_s"] = row["layer"]["median_s"] * nl
        row["stack"] = summary(timer(stack, 1, stack_reps))
        row["stack"]["per_layer_s"] = row["stack"]["median_s"] / nl
        c = row["counts_per_layer"]
        row["achieved_tflops_stack"] = c["flops"] / row["stack"]["per_layer_s"] / 1e12
        prefill.append(row)
        print(f"prefill T={t}: layer {row['layer']['median_s'] * 1e3:.3f} ms, stack {row['stack']['median_s'] * 1e3:.2f}"
              f" ms ({row['achieved_tflops_stack']:.0f} TFLOP/s)", flush=True)
    res["prefill"] = prefill

    decode = []
    for bsz in batches:
        x = torch.randn(bsz, cfg["hidden"], device=dev, dtype=dtype, generator=gen)
        kb = [k[:bsz] for k in kc]  # contiguous leading slices
        vb = [v[:bsz] for v in vc]

        def one(x: torch.Tensor = x, kb: list = kb, vb: list = vb) -> torch.Tensor:
            return layers[0].decode(x, kb[0], vb[0])

        def stack(x: torch.Tensor = x, kb: list = kb, vb: list = vb) -> torch.Tensor:
            for lay, k, v in zip(layers, kb, vb, strict=True):
                x = lay.decode(x, k, v)
            return x

        row = {"batch": bsz, "kv_len": kv_len, "kv_tokens": bsz * kv_len,
               "counts_per_layer": layer_counts(cfg, "decode", bsz, kv_len)}
        row["layer"] = summary(timer(one, warmup, reps))
        row["layer"]["whole_model_s"] = row["layer"]["median_s"] * nl
        row["stack"] = summary(timer(stack, 2, stack_reps))
        row["stack"]["per_layer_s"] = row["stack"]["median_s"] / nl
        row["stack_graph"] = graph_time(stack, dev, timer, 2, stack_reps)
        c = row["counts_per_layer"]
        best = row["stack_graph"].get("median_s", row["stack"]["median_s"]) / nl
        row["achieved_gb_s_best"] = (c["weight_bytes"] + c["kv_bytes"]) / best / 1e9
        decode.append(row)
        g = row["stack_graph"].get("median_s")
        print(f"decode B={bsz}: layer {row['layer']['median_s'] * 1e6:.1f} us, stack {row['stack']['median_s'] * 1e3:.3f}"
              f" ms, graph {g * 1e3 if g else float('nan'):.3f} ms ({row['achieved_gb_s_best']:.0f} GB/s)", flush=True)
    res["decode"] = decode

    res["kernels"] = {
        "prefill_layer": kernel_names(lambda: layers[0].prefill(torch.zeros(prefill_ts[1], cfg["hidden"],
                                                                            device=dev, dtype=dtype)), dev),
        "decode_layer": kernel_names(lambda: layers[0].decode(torch.zeros(batches[3 % len(batches)], cfg["hidden"],
                                                                          device=dev, dtype=dtype),
                                                              kc[0][:batches[3 % len(batches)]],
                                                              vc[0][:batches[3 % len(batches)]]), dev),
    }
    if dev.startswith("cuda"):
        res["env"]["max_memory_allocated_bytes"] = torch.cuda.max_memory_allocated()
    res["wall_s"] = time.perf_counter() - t_start
    text = json.dumps(res, indent=1)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as fh:
        fh.write(text)
    print(text, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
