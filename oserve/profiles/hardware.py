"""Datasheet numbers of the accelerators oserve can model, and a measured entry for this CPU.

Every GPU figure is a *dense* (no structured sparsity) peak from the NVIDIA datasheet named in
the entry's ``citation``. Memory sizes are the usable sizes ``nvidia-smi`` reports (MiB), not the
marketing GB figure. Interconnect bandwidths are per direction (the datasheets quote the
bidirectional total: 600 GB/s NVLink 3 on A100 -> 300 GB/s per direction).

The effective all-reduce parameters (``allreduce_latency_s``, ``allreduce_busbw_bytes_s``) are
not datasheet numbers: they are least-squares fits of Vidur's measured NCCL all-reduce timings
(``bench/calibrate.py``, ``bench/results/calibration.json``; Agrawal et al., MLSys 2024). For
L4 (PCIe, no NVLink) no measurement exists here and the PCIe Gen4 figure is scaled by the
A100 busbw/datasheet ratio.

The ``cpu`` entry describes this machine and was measured with :func:`measure_cpu`; run it on
another machine (``python -m oserve.profiles.hardware``) and pass the result to the roofline.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from oserve.errors import ConfigError

__all__ = ["Hardware", "HARDWARE", "get_hardware", "measure_cpu", "ComputeDtype"]

ComputeDtype = Literal["fp32", "fp16", "fp8", "int8"]

_GIB = 1024**3
_MIB = 1024**2


class Hardware(BaseModel):
    """One device type: peak numbers of ONE device (one GPU, or one CPU core for ``kind='cpu'``).

    Attributes:
        name: key, e.g. ``"a100-80gb"``.
        kind: ``"gpu"`` or ``"cpu"``.
        memory_bytes: usable device memory, bytes (CPU: memory one replica may use).
        mem_bw_bytes_s: peak memory bandwidth, bytes/s (CPU: whole socket, shared by cores).
        peak_flops: dense peak FLOP/s (or OP/s for int8) per compute dtype.
        interconnect: ``"nvlink"``, ``"pcie"`` or ``"none"``.
        interconnect_bw_bytes_s: per-direction link bandwidth per device, bytes/s (datasheet).
        allreduce_latency_s: fitted fixed cost of one all-reduce, s.
        allreduce_busbw_bytes_s: fitted effective bus bandwidth of a ring all-reduce, bytes/s.
        supports_fp8: FP8 tensor cores (Hopper, Ada).
        citation: where the numbers come from.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    kind: Literal["gpu", "cpu"] = "gpu"
    memory_bytes: int = Field(..., gt=0, description="usable memory per device, bytes")
    mem_bw_bytes_s: float = Field(..., gt=0, description="peak memory bandwidth, bytes/s")
    peak_flops: dict[str, float] = Field(..., description="dense peak FLOP/s per compute dtype")
    interconnect: Literal["nvlink", "pcie", "none"] = "nvlink"
    interconnect_bw_bytes_s: float = Field(0.0, ge=0, description="per-direction link bandwidth, bytes/s")
    allreduce_latency_s: float = Field(0.0, ge=0, description="fitted all-reduce fixed cost, s")
    allreduce_busbw_bytes_s: float = Field(1.0, gt=0, description="fitted ring all-reduce bus bandwidth, bytes/s")
    supports_fp8: bool = False
    citation: str = ""

    def flops(self, dtype: str) -> float:
        """Dense peak FLOP/s for compute ``dtype``.

        Raises:
            ConfigError: the device has no such compute path (e.g. fp8 on A100).
        """
        if dtype not in self.peak_flops:
            raise ConfigError(
                f"{self.name} has no {dtype} compute", field="precision", allowed=", ".join(sorted(self.peak_flops))
            )
        return self.peak_flops[dtype]


_A100_COMPUTE = {"fp32": 19.5e12, "fp16": 312e12, "int8": 624e12}
_HOPPER_COMPUTE = {"fp32": 67e12, "fp16": 989.4e12, "fp8": 1978.9e12, "int8": 1978.9e12}

HARDWARE: dict[str, Hardware] = {
    "a100-40gb": Hardware(
        name="a100-40gb",
        memory_bytes=40960 * _MIB,
        mem_bw_bytes_s=1555e9,
        peak_flops=_A100_COMPUTE,
        interconnect="nvlink",
        interconnect_bw_bytes_s=300e9,
        allreduce_latency_s=3.36e-5,
        allreduce_busbw_bytes_s=1.539e11,
        citation="NVIDIA A100 Tensor Core GPU Datasheet (2021), SXM4 40GB: FP32 19.5 TFLOPS, FP16/BF16 "
        "312 TFLOPS, INT8 624 TOPS (dense), HBM2 1,555 GB/s, NVLink 600 GB/s; all-reduce fit: Vidur a100_dgx",
    ),
    "a100-80gb": Hardware(
        name="a100-80gb",
        memory_bytes=81920 * _MIB,
        mem_bw_bytes_s=2039e9,
        peak_flops=_A100_COMPUTE,
        interconnect="nvlink",
        interconnect_bw_bytes_s=300e9,
        allreduce_latency_s=3.36e-5,
        allreduce_busbw_bytes_s=1.539e11,
        citation="NVIDIA A100 Tensor Core GPU Datasheet (2021), SXM4 80GB: FP32 19.5 TFLOPS, FP16/BF16 "
        "312 TFLOPS, INT8 624 TOPS (dense), HBM2e 2,039 GB/s, NVLink 600 GB/s; all-reduce fit: Vidur a100_dgx",
    ),
    "h100-sxm": Hardware(
        name="h100-sxm",
        memory_bytes=81559 * _MIB,
        mem_bw_bytes_s=3.35e12,
        peak_flops=_HOPPER_COMPUTE,
        interconnect="nvlink",
        interconnect_bw_bytes_s=450e9,
        allreduce_latency_s=2.26e-5,
        allreduce_busbw_bytes_s=3.238e11,
        supports_fp8=True,
        citation="NVIDIA H100 Tensor Core GPU Datasheet (2023), H100 SXM: FP32 67 TFLOPS, FP16/BF16 989 "
        "TFLOPS, FP8 1,979 TFLOPS, INT8 1,979 TOPS (dense), HBM3 3.35 TB/s, NVLink 900 GB/s; all-reduce "
        "fit: Vidur h100_dgx",
    ),
    "h200": Hardware(
        name="h200",
        memory_bytes=143771 * _MIB,
        mem_bw_bytes_s=4.8e12,
        peak_flops=_HOPPER_COMPUTE,
        interconnect="nvlink",
        interconnect_bw_bytes_s=450e9,
        allreduce_latency_s=2.26e-5,
        allreduce_busbw_bytes_s=3.238e11,
        supports_fp8=True,
        citation="NVIDIA H200 Tensor Core GPU Datasheet (2024), H200 SXM: 141 GB HBM3e at 4.8 TB/s, "
        "compute as H100 SXM (FP16 989 TFLOPS, FP8 1,979 TFLOPS dense), NVLink 900 GB/s; all-reduce as H100",
    ),
    "l4": Hardware(
        name="l4",
        memory_bytes=23034 * _MIB,
        mem_bw_bytes_s=300e9,
        peak_flops={"fp32": 30.3e12, "fp16": 121e12, "fp8": 242.5e12, "int8": 242.5e12},
        interconnect="pcie",
        interconnect_bw_bytes_s=32e9,
        allreduce_latency_s=5.0e-5,
        allreduce_busbw_bytes_s=1.64e10,
        supports_fp8=True,
        citation="NVIDIA L4 Tensor Core GPU Datasheet (2023): FP32 30.3 TFLOPS, FP16/BF16 121 TFLOPS, "
        "FP8 242.5 TFLOPS, INT8 242.5 TOPS (dense = half the sparse figures), 24 GB GDDR6 300 GB/s, "
        "PCIe Gen4 x16 64 GB/s; all-reduce: PCIe scaled by the A100 busbw/datasheet ratio (not measured)",
    ),
    # Measured on the development machine (AMD EPYC Zen 3, 2 cores under KVM, 23 GiB RAM) with
    # measure_cpu(): torch 1-thread 1024^3 matmul and a numpy 256 MiB copy. Per core.
    "cpu": Hardware(
        name="cpu",
        kind="cpu",
        memory_bytes=8 * _GIB,
        mem_bw_bytes_s=18e9,
        peak_flops={"fp32": 55e9, "fp16": 0.8e9},
        interconnect="none",
        citation="measured with oserve.profiles.hardware.measure_cpu on the oserve dev machine (AMD EPYC "
        "Zen 3, 2 vCPU, KVM), 2026-11-29: fp32 matmul 55 GFLOP/s/core, bf16 0.8 GFLOP/s/core (no "
        "AVX512-BF16), copy 36 GB/s read+write (18 GB/s read)",
    ),
}


def get_hardware(name: str) -> Hardware:
    """Return the built-in entry ``name``.

    Raises:
        ConfigError: unknown device type (field ``device_type``).
    """
    try:
        return HARDWARE[name]
    except KeyError:
        raise ConfigError(
            f"unknown device type {name!r}", field="device_type", allowed=", ".join(sorted(HARDWARE))
        ) from None


def measure_cpu(matmul_size: int = 1024, copy_mib: int = 256, repeats: int = 5) -> Hardware:
    """Measure this machine's per-core matmul FLOP/s and memory bandwidth.

    Uses one torch thread for a ``matmul_size``^3 fp32 and bf16 matmul and a numpy copy of
    ``copy_mib`` MiB (bandwidth counts the bytes read). Takes about 2 s.

    Returns:
        A ``Hardware`` named ``"cpu"`` (memory: the machine's total RAM).
    """
    import os
    import time

    import numpy as np
    import torch

    torch.set_num_threads(1)
    flops: dict[str, float] = {}
    for key, dt in (("fp32", torch.float32), ("fp16", torch.bfloat16)):
        a = torch.randn(matmul_size, matmul_size, dtype=dt)
        b = torch.randn(matmul_size, matmul_size, dtype=dt)
        a @ b
        n = repeats if key == "fp32" else 1
        t0 = time.perf_counter()
        for _ in range(n):
            a @ b
        flops[key] = 2 * matmul_size**3 * n / (time.perf_counter() - t0)
    x = np.ones(copy_mib * _MIB // 8)
    y = np.empty_like(x)
    np.copyto(y, x)
    t0 = time.perf_counter()
    for _ in range(repeats):
        np.copyto(y, x)
    bw = x.nbytes * repeats / (time.perf_counter() - t0)
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return Hardware(
        name="cpu", kind="cpu", memory_bytes=int(mem), mem_bw_bytes_s=bw, peak_flops=flops, interconnect="none",
        citation="measured with oserve.profiles.hardware.measure_cpu",
    )


if __name__ == "__main__":  # pragma: no cover - manual calibration helper
    print(json.dumps(measure_cpu().model_dump(), indent=2))
