"""The demo's CPU profile table: one measured on this machine's CPU, or a quick re-measurement.

CPU profiles are machine-specific: a table records the CPU model and ISA flags it was measured on
(:mod:`oserve.profiles.cpu_info`) and one core's speed (:mod:`oserve.profiles.cpu_speed`), and applies
only to the same CPU at a core speed within a factor 1.3 either way (VMs showing one CPU model can differ
in speed). :func:`demo_table` returns the
first shipped table valid here; when none is, it re-measures the demo's variants with
``oserve profile`` (``examples/profile-cpu-demo.yaml``: a light sweep, a few minutes on 2 cores)
plus the quality probe, writes the table under the output folder, and says so.
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from pathlib import Path

from oserve.profiles.cpu_info import CpuIdentity, current_cpu, select_table
from oserve.profiles.cpu_speed import measure_cpu_speed

__all__ = ["demo_table", "remeasure"]

log = logging.getLogger("oserve.cli.demo")


def _slug(cpu: CpuIdentity) -> str:
    return re.sub(r"[^a-z0-9]+", "-", f"{cpu.vendor}-{cpu.model}-{cpu.family}".lower()).strip("-") or "cpu"


def remeasure(profile_config: Path, out: Path) -> None:
    """Measure ``profile_config``'s variants into ``out`` (``oserve profile``), then their quality.

    Runs both as child processes (each starts vLLM engines, which need a ``__main__`` guard).

    Raises:
        RuntimeError: a measuring step exited non-zero (its exit status in the message).
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    steps = [[sys.executable, "-m", "oserve.cli", "profile", str(profile_config), "-o", str(out), "--no-progress"],
             [sys.executable, "-m", "oserve.backends.quality_probe", str(out)]]
    for cmd in steps:
        log.info("re-measuring: %s", " ".join(cmd[1:]))
        rc = subprocess.call(cmd)
        if rc != 0:
            raise RuntimeError(f"{' '.join(cmd[1:4])} exited with status {rc}")


def _set_aside(measured: Path) -> None:
    """Move a refused earlier re-measurement and its sweep state out of the way: ``oserve profile`` resumes a
    sweep from its state file, which would re-fit the old machine's timings and stamp them with this speed."""
    for f in (measured, measured.with_name(measured.name + ".sweep.json")):
        if f.exists():
            f.replace(f.with_name(f.name + ".refused"))
            log.info("set aside %s (measured on another machine or at another speed)", f.name)


def demo_table(candidates: list[Path], profile_config: Path, out_dir: Path) -> tuple[Path, str]:
    """The profile table for this machine and a sentence saying where it came from.

    Args:
        candidates: shipped tables, in order of preference.
        profile_config: the profile config to re-measure with when no candidate is valid here.
        out_dir: where a re-measured table goes (``profile-<cpu>.json``; reused by the next run on the
            same CPU).

    Raises:
        RuntimeError: re-measuring failed.
    """
    cpu = current_cpu()
    speed = measure_cpu_speed()
    measured = out_dir / f"profile-{_slug(cpu)}.json"
    path, reasons = select_table([*candidates, measured], cpu, speed)
    where = (f"{cpu.vendor} {cpu.model!r} (family {cpu.family}, flags {' '.join(cpu.flags)}; one core "
             f"{speed.memory_gbps:.3g} GB/s GEMV, {speed.gemm_gflops:.3g} GFLOP/s GEMM)")
    if path is not None:
        return path, f"profile table {path}: measured on this CPU at this speed, {where}"
    # the reasons of every table that exists, the earlier re-measurement included (refused for speed, say)
    why = "; ".join(f"{Path(p).name}: {r}" for p, r in reasons.items() if Path(p) != measured or measured.exists())
    log.warning("no CPU profile is valid on %s (%s): re-measuring the demo's variants (a few minutes)", where, why)
    _set_aside(measured)
    remeasure(profile_config, measured)
    return measured, f"profile table {measured}: RE-MEASURED now on {where}, because {why}"
