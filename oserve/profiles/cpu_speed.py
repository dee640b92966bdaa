"""How fast one core of this machine is, so a CPU profile table is not used on a slower or faster VM.

The CPU identity (:mod:`oserve.profiles.cpu_info`) says which instructions a table's timings used, not how fast
the core ran them: cloud VMs showing one CPU model can differ in clock, memory bandwidth and neighbours. This
project's VMs measured SmolLM2-135M fp32 at 0.052 and 0.065 s per batch-1 decode step (2026-12-01 and 2026-12-02
morning, both "AMD EPYC" family 25/17) and 0.029 s (2026-12-02 midday, family 26/2). The first pair's 1.25x is
within what two profiles of one VM differ by (up to 1.27x, :data:`DEFAULT_SPEED_TOLERANCE`), so the speed check
is a guard against gross differences under one identity (a table from a VM 1.3x slower or faster), which the
demo would otherwise use to choose a load that misses the capacity it is meant to straddle; it was not observed
to separate two VMs here (both same-identity VMs were gone before the probe existed).

:func:`measure_cpu_speed` times, on one thread (a replica here owns one core), the two kernels an
engine iteration is made of:

* ``memory_gbps``: a fp32 matrix-vector product over a 256 MiB matrix (``torch.mv``), bytes of the
  matrix per second. A batch-1 decode step streams every weight once, so it is bound by this.
* ``gemm_gflops``: a fp32 ``(512 x 576) @ (576 x 1536)`` product (SmolLM2's MLP shape at a 512-token
  prefill chunk), 2*m*k*n flop per second. Prefill is bound by this.

Each is the best of ``repeats`` timings, after an untimed warm-up and spread over about a second: the best is
what the core can do, and is the least moved by a neighbour process (on a 2-core VM a second probe on the other
core lowered the median GEMV bandwidth by up to 28%; without the warm-up and the spread a first probe in a
fresh process read 20-23% low in 4 of 14 processes). A table records the result (``measured_speed``); a
table whose recorded speed differs from this machine's by more than ``tolerance`` on either kernel
is not valid here (:func:`speed_validity`, a factor of 1.3 either way by default).
:func:`oserve.profiles.hardware.measure_cpu` is another probe, of peak numbers for the roofline model
(a 1024^3 matmul, a numpy copy); this one times the shapes a SmolLM2 iteration runs, to compare machines.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, Field

from oserve.errors import ConfigError
from oserve.profiles.cpu_info import Validity

__all__ = ["CpuSpeed", "measure_cpu_speed", "speed_validity", "check_tolerance", "DEFAULT_SPEED_TOLERANCE"]

#: Largest factor (minus 1) between either kernel's recorded speed and this machine's at which a table stays
#: valid. Above the profile's own spread: two profiles of one VM an hour apart fitted a batch-1 fp32 decode step
#: of 0.029 and 0.037 s (1.27x; raw medians 0.028 and 0.038 s, a probe test ran beside the second), so a smaller
#: gap between VMs cannot be told from it; below the 1.8-2.2x between the project's Zen 4 and Zen 5 VMs.
DEFAULT_SPEED_TOLERANCE = 0.3
_GEMV_BYTES = 256 * 2**20
_SPREAD_S = 0.05
_GEMM_SHAPE = (512, 576, 1536)
_METHOD = "torch, 1 thread, best of {n}: fp32 torch.mv over a 256 MiB matrix; fp32 mm (512x576)@(576x1536)"


class CpuSpeed(BaseModel):
    """One core's speed on the two kernels of an engine iteration (module docstring).

    Attributes:
        memory_gbps: fp32 matrix-vector product bandwidth, 1e9 bytes/s.
        gemm_gflops: fp32 matrix product throughput, 1e9 flop/s.
        method: how both were measured.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    memory_gbps: float = Field(..., gt=0, allow_inf_nan=False, description="fp32 GEMV bandwidth, GB/s")
    gemm_gflops: float = Field(..., gt=0, allow_inf_nan=False, description="fp32 GEMM throughput, GFLOP/s")
    method: str = Field("", description="how the two numbers were measured")


def _best_s(fn: Callable[[], object], repeats: int, inner: int = 1) -> float:
    for _ in range(3 * inner):  # warm-up, untimed
        fn()
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        best = min(best, (time.perf_counter() - t0) / inner)
        time.sleep(_SPREAD_S)  # spread the samples: a neighbour's burst of a few 100 ms cannot cover them all
    return best


def measure_cpu_speed(repeats: int = 15) -> CpuSpeed:
    """Measure this machine's one-core speed (module docstring); about 3 s, 256 MiB of memory.

    Raises:
        ConfigError: ``repeats`` < 1.
        ImportError: torch is not installed (the CPU engines need it too).
    """
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ConfigError(f"repeats must be an integer >= 1, got {repeats!r}", field="repeats", allowed=">= 1")
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        k = 576
        w = torch.randn(_GEMV_BYTES // 4 // k, k)
        x = torch.randn(k)
        torch.mv(w, x)  # first touch / allocation outside the timing
        gemv_s = _best_s(lambda: torch.mv(w, x), repeats)
        w = x = None  # free the 256 MiB before the GEMM
        m, kk, n = _GEMM_SHAPE
        a, b = torch.randn(m, kk), torch.randn(kk, n)
        torch.mm(a, b)
        gemm_s = _best_s(lambda: torch.mm(a, b), repeats, inner=5)
    finally:
        torch.set_num_threads(threads)
    return CpuSpeed(memory_gbps=round(_GEMV_BYTES / gemv_s / 1e9, 3), gemm_gflops=round(2 * m * kk * n / gemm_s / 1e9, 2),
                    method=_METHOD.format(n=repeats))


def check_tolerance(tolerance: object) -> float:
    """``tolerance`` as a float.

    Raises:
        ConfigError: not a finite number > 0.
    """
    if isinstance(tolerance, bool) or not (isinstance(tolerance, int | float) and math.isfinite(tolerance)
                                           and tolerance > 0):
        raise ConfigError(f"tolerance must be a finite number > 0, got {tolerance!r}", field="tolerance",
                          allowed="> 0 (relative)")
    return float(tolerance)


def speed_validity(recorded: CpuSpeed | None, here: CpuSpeed, tolerance: float = DEFAULT_SPEED_TOLERANCE) -> Validity:
    """Whether a table measured at speed ``recorded`` is valid on a machine measured at ``here``.

    Valid when each kernel's speed here is within a factor ``1 + tolerance`` of the recorded one, either way
    (symmetric: a table from a 1.3x faster machine is refused as one from a 1.3x slower machine is). A table
    without a recorded speed is not valid (nothing shows it matches this machine's speed).

    Raises:
        ConfigError: ``tolerance`` not a finite number > 0.
    """
    limit = math.log1p(check_tolerance(tolerance))
    if recorded is None:
        return Validity(False, "the table does not record the CPU speed it was measured at")
    off = []
    for name, unit in (("memory_gbps", "GB/s GEMV"), ("gemm_gflops", "GFLOP/s GEMM")):
        r, h = getattr(recorded, name), getattr(here, name)
        ratio = h / r
        if not (0 < ratio < math.inf) or abs(math.log(ratio)) > limit:  # under/overflow: far apart
            off.append(f"{h:.3g} {unit} here vs {r:.3g} when measured ({h / r:.2f}x)")
    if off:
        return Validity(False, f"this machine's core speed differs by more than a factor {1 + tolerance:.3g}: "
                               + "; ".join(off))
    return Validity(True)
