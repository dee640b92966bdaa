"""Which CPU a profile was measured on, and whether a profile is valid for this machine.

CPU speed per precision depends on the instruction set more than on the clock: bf16 is fast only
with native bf16 dot products (AVX-512 BF16 or AMX-BF16; without them vLLM-CPU's bf16 was measured
about 4x slower than fp32), int8 W8A8 needs int8 dot products (AVX-512 VNNI, AVX-VNNI or AMX-INT8)
to beat fp32. So a CPU profile table records the CPU model and these flags
(:class:`CpuIdentity`, field ``measured_on`` of the table), and :func:`table_validity` tells whether
a table applies to the machine it is about to be used on.

Reading the machine (:func:`current_cpu`) is the only effect; parsing and checks are pure.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from oserve.profiles.cpu_speed import CpuSpeed

__all__ = [
    "PERF_FLAGS",
    "CpuIdentity",
    "Validity",
    "parse_cpuinfo",
    "current_cpu",
    "native_bf16",
    "fast_int8",
    "cpu_precisions",
    "table_validity",
    "select_table",
]

#: ``/proc/cpuinfo`` flags that change which precision is fast (the only ones a table records).
PERF_FLAGS: tuple[str, ...] = (
    "avx2", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni",
    "amx_tile", "amx_bf16", "amx_int8",
)


class CpuIdentity(BaseModel):
    """The CPU a table was measured on.

    Attributes:
        model: model name (``/proc/cpuinfo`` ``model name``), e.g. ``"AMD EPYC 9654"``.
        vendor: ``vendor_id``, e.g. ``"AuthenticAMD"``.
        family: ``"<cpu family>/<model>"`` on x86 (e.g. ``"25/17"``: Zen 4 Genoa), ``CPU part`` on Arm;
            tells CPUs apart when a hypervisor shows a generic model name.
        flags: the :data:`PERF_FLAGS` the CPU has, sorted.
        logical_cpus: logical CPUs the machine exposes (recorded, not compared).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    model: str = Field(..., description="CPU model name")
    vendor: str = Field("", description="CPU vendor id")
    family: str = Field("", description="x86 'cpu family/model' numbers, or the Arm CPU part")
    flags: tuple[str, ...] = Field((), description="performance-relevant ISA flags present, sorted")
    logical_cpus: int = Field(0, ge=0, description="logical CPUs of the machine")


@dataclass(frozen=True)
class Validity:
    """Whether a table applies to a CPU; ``reason`` says why not (empty when valid)."""

    ok: bool
    reason: str = ""


def parse_cpuinfo(text: str, logical_cpus: int = 0) -> CpuIdentity:
    """Parse the text of ``/proc/cpuinfo`` (x86 or Arm) into a :class:`CpuIdentity`.

    Only the first processor block is read. Missing fields become ``""`` / no flags.
    """
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip().lower(), value.strip())
    flags = set((fields.get("flags") or fields.get("features") or "").split())
    model = fields.get("model name") or fields.get("cpu model") or fields.get("cpu part", "")
    if "cpu family" in fields:
        family = f"{fields['cpu family']}/{fields.get('model', '')}"
    else:
        family = fields.get("cpu part", "")
    return CpuIdentity(model=model, vendor=fields.get("vendor_id", fields.get("cpu implementer", "")), family=family,
                       flags=tuple(sorted(f for f in PERF_FLAGS if f in flags)), logical_cpus=logical_cpus)


def current_cpu(cpuinfo: Path = Path("/proc/cpuinfo")) -> CpuIdentity:
    """The CPU of this machine (reads ``cpuinfo``; falls back to ``platform.processor()``, no flags)."""
    try:
        return parse_cpuinfo(cpuinfo.read_text(), os.cpu_count() or 0)
    except OSError:
        return CpuIdentity(model=platform.processor() or platform.machine(), logical_cpus=os.cpu_count() or 0)


def native_bf16(cpu: CpuIdentity) -> bool:
    """True when the CPU computes bf16 dot products natively (AVX-512 BF16 or AMX-BF16)."""
    return "avx512_bf16" in cpu.flags or "amx_bf16" in cpu.flags


def fast_int8(cpu: CpuIdentity) -> bool:
    """True when the CPU has int8 dot-product instructions (AVX-512 VNNI, AVX-VNNI or AMX-INT8)."""
    return any(f in cpu.flags for f in ("avx512_vnni", "avx_vnni", "amx_int8"))


def cpu_precisions(cpu: CpuIdentity) -> tuple[str, ...]:
    """Precisions worth offering on ``cpu``: fp32 always, int8 with int8 dot products, bf16 if native."""
    out = ["fp32"]
    if fast_int8(cpu):
        out.append("int8")
    if native_bf16(cpu):
        out.append("bf16")
    return tuple(out)


def table_validity(measured_on: CpuIdentity | None, cpu: CpuIdentity) -> Validity:
    """Whether a table measured on ``measured_on`` is valid on ``cpu``.

    Valid when the CPU vendor, model name, family/model numbers and the :data:`PERF_FLAGS` subset are the same (the logical CPU count
    is not compared: variants bind to cores). A table without ``measured_on`` is not valid for any
    CPU (nothing says where it was measured).
    """
    if measured_on is None:
        return Validity(False, "the table does not record the CPU it was measured on")
    if (measured_on.model, measured_on.vendor, measured_on.family) != (cpu.model, cpu.vendor, cpu.family):
        return Validity(False, f"measured on {measured_on.vendor} {measured_on.model!r} (family {measured_on.family}), "
                               f"this machine is {cpu.vendor} {cpu.model!r} (family {cpu.family})")
    if tuple(sorted(measured_on.flags)) != tuple(sorted(cpu.flags)):
        gone = sorted(set(measured_on.flags) - set(cpu.flags))
        new = sorted(set(cpu.flags) - set(measured_on.flags))
        return Validity(False, f"CPU flags differ: missing here {gone}, new here {new}")
    return Validity(True)


def select_table(candidates: list[Path], cpu: CpuIdentity, speed: CpuSpeed | None = None,
                 tolerance: float | None = None) -> tuple[Path | None, dict[str, str]]:
    """The first profile table among ``candidates`` that is valid for ``cpu`` (and, given, ``speed``).

    Args:
        candidates: table files, in order of preference.
        cpu: the machine's CPU (:func:`current_cpu`).
        speed: the machine's one-core speed (:func:`oserve.profiles.cpu_speed.measure_cpu_speed`); when
            given, a table must also record a speed within ``tolerance`` of it
            (:func:`oserve.profiles.cpu_speed.speed_validity`): VMs showing one CPU model can differ in speed.
        tolerance: the speed factor allowed, minus 1, either way (default
            :data:`oserve.profiles.cpu_speed.DEFAULT_SPEED_TOLERANCE`).

    Returns:
        ``(path or None, reasons)``: ``reasons`` maps each rejected candidate to why (unreadable, or
        :func:`table_validity`'s or ``speed_validity``'s reason), so a caller that re-measures can say why it does.

    Raises:
        ConfigError: ``tolerance`` not a finite number > 0.
    """
    from oserve.errors import ProfileError
    from oserve.profiles.cpu_speed import DEFAULT_SPEED_TOLERANCE, check_tolerance, speed_validity
    from oserve.profiles.table import ProfileTable

    tol = check_tolerance(DEFAULT_SPEED_TOLERANCE if tolerance is None else tolerance)
    reasons: dict[str, str] = {}
    for path in candidates:
        try:
            table = ProfileTable.load(path)
        except ProfileError as exc:
            reasons[str(path)] = str(exc)
            continue
        v = table_validity(table.measured_on, cpu)
        if v.ok and speed is not None:
            v = speed_validity(table.measured_speed, speed, tol)
        if v.ok:
            return Path(path), reasons
        reasons[str(path)] = v.reason
    return None, reasons
