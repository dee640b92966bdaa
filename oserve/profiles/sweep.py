"""Sweep bookkeeping for the profiler: per-candidate state, host fit, and the SLO report.

- **State keyed per candidate.** The state file holds each candidate variant's raw timings under
  its name together with a digest of everything that shapes them (model, backend, device type,
  the variant's fields and the sweep settings). Changing the config (removing a candidate, adding
  one, changing the SLO or the classes) keeps every measurement whose digest still matches; only
  a candidate whose own settings changed is measured again. A failed candidate is recorded with
  its reason and retried by the next run.
- **Host fit.** Before anything starts, a candidate that needs more CPU cores than this process
  may use, more GPUs than are visible, or more memory than is available is skipped with a reason.
- **SLO report.** Classes no measured variant can serve within the SLO are reported with the best
  achievable TTFT and TPOT (the lowest load point of each variant).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oserve.errors import ProfileError
from oserve.profiles.table import ProfileTable
from oserve.profiles.variants import Variant

__all__ = ["STATE_VERSION", "HostResources", "SweepState", "SweepReport", "UnmetClass", "candidate_digest",
           "unfit_reason", "unmet_classes"]

log = logging.getLogger(__name__)

STATE_VERSION = 2


def candidate_digest(model: str, backend: Any, sweep: Any, variant: Variant) -> str:
    """Identity of what is measured for one candidate (16 hex digits).

    ``backend`` is the config's ``{kind, params}`` (or a kind name); a kind without params hashes as
    the bare name, so states written when the backend was named by a string still match.
    """
    if not isinstance(backend, str):
        backend = backend.kind if not backend.params else backend.model_dump(mode="json")
    payload = json.dumps({"model": model, "backend": backend, "sweep": sweep.model_dump(),
                          "variant": json.loads(variant.model_dump_json())}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class HostResources:
    """What this machine offers a replica now.

    Attributes:
        cpu_cores: cores this process may run on.
        memory_bytes: memory available now, bytes.
        gpus: GPUs visible, or None when unknown (then not checked).
    """

    cpu_cores: int
    memory_bytes: int
    gpus: int | None = None

    @classmethod
    def detect(cls) -> HostResources:
        """Cores from the CPU affinity, memory from psutil, GPUs from ``CUDA_VISIBLE_DEVICES`` if set."""
        import psutil

        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            cores = os.cpu_count() or 1
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        gpus = len([d for d in visible.split(",") if d.strip()]) if visible is not None else None
        return cls(cpu_cores=cores, memory_bytes=int(psutil.virtual_memory().available), gpus=gpus)


def unfit_reason(variant: Variant, host: HostResources) -> str | None:
    """Why ``variant`` cannot run on ``host`` (devices or memory), or None when it can."""
    if variant.hardware.kind == "cpu":
        if variant.devices > host.cpu_cores:
            return f"needs {variant.devices} CPU cores, this machine offers {host.cpu_cores}"
        need = variant.weights_bytes + variant.kv_cache_total_bytes
        if need > host.memory_bytes:
            return (f"needs {need / 2**30:.1f} GiB (weights + KV cache), {host.memory_bytes / 2**30:.1f} GiB "
                    "available")
        return None
    if host.gpus is not None and variant.devices > host.gpus:
        return f"needs {variant.devices} GPUs, {host.gpus} visible"
    return None


class SweepState:
    """The state file: per-candidate raw timings keyed by name, each with its digest.

    Args:
        path: the state file (``PROFILE.json.sweep.json``).
        candidates: candidate name -> digest for this run.
        legacy_digest: the whole config's digest (``ProfileConfig.digest()``): a state file of the
            old format (version 1) with this digest is adopted, another one is moved aside (``.v1``).

    Raises:
        ProfileError: the file exists but is not JSON.
    """

    def __init__(self, path: Path, candidates: dict[str, str], legacy_digest: str | None = None) -> None:
        self.path = path
        self.candidates = candidates
        self.data: dict[str, Any] = {"version": STATE_VERSION, "candidates": {}}
        if not path.exists():
            return
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ProfileError(f"sweep state {path} is not JSON: {exc}") from exc
        if raw.get("version") == STATE_VERSION:
            self.data = raw
        elif "config_digest" in raw:  # version 1: one digest for the whole config
            if raw["config_digest"] == legacy_digest:  # the same config: every record is this run's
                self.data["candidates"] = {n: {**rec, "digest": candidates[n]}
                                           for n, rec in raw.get("variants", {}).items() if n in candidates}
            else:
                backup = path.with_name(path.name + ".v1")
                path.replace(backup)
                log.warning("sweep state %s is of another config in the old format (one digest per config); "
                            "moved it to %s", path, backup)

    def entry(self, name: str) -> dict[str, Any]:
        """The record of candidate ``name``: kept when its digest matches, else a fresh one.

        Side effects: a stale record is replaced; a failure mark of an earlier run is cleared.
        """
        store = self.data["candidates"]
        digest = self.candidates[name]
        rec = store.get(name)
        if rec is None or rec.get("digest") != digest:
            if rec is not None:
                log.info("candidate %s changed since it was measured; measuring it again", name)
            rec = {"digest": digest}
            store[name] = rec
        rec.pop("failed", None)
        return rec

    def save(self) -> None:
        """Write the state atomically (a temporary file renamed over the old one)."""
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=1))
        tmp.replace(self.path)


@dataclass(frozen=True)
class UnmetClass:
    """A class no measured variant serves within the SLO, with the best that is achievable (s)."""

    name: str
    best_ttft_s: float
    best_ttft_variant: str
    best_tpot_s: float
    best_tpot_variant: str

    def describe(self) -> str:
        """One line, e.g. ``short/short: best TTFT 0.041 s (v1), best TPOT 0.012 s (v2)``."""
        return (f"{self.name}: best TTFT {self.best_ttft_s:.3g} s ({self.best_ttft_variant}), "
                f"best TPOT {self.best_tpot_s:.3g} s ({self.best_tpot_variant})")


def unmet_classes(table: ProfileTable) -> list[UnmetClass]:
    """Classes with capacity 0 on every variant of ``table``, with the lowest TTFT and TPOT any reaches.

    Classes whose requests fit no variant's context (``max_model_len``) are not listed. The table's latencies for a class a variant cannot serve within the SLO are those of its lowest
    load (one request at a time), i.e. the best that variant achieves; 0 means the class does not
    fit the variant's context at all and is left out.
    """
    out = []
    for c in table.class_names:
        rows = [(n, v.classes[c]) for n, v in table.variants.items() if c in v.classes]
        if any(p.capacity_rps > 0 for _, p in rows):
            continue
        fits = [(n, p) for n, p in rows if p.ttft_s > 0]
        if not fits:  # fits no variant's context: not an SLO matter (the table shows capacity 0)
            continue
        t_name, t_best = min(fits, key=lambda np_: np_[1].ttft_s)
        p_name, p_best = min(fits, key=lambda np_: np_[1].tpot_s)
        out.append(UnmetClass(c, t_best.ttft_s, t_name, p_best.tpot_s, p_name))
    return out


@dataclass
class SweepReport:
    """What a sweep did besides the table.

    Attributes:
        measured: candidates in the table.
        skipped: candidate -> why it cannot run here (never started).
        failed: candidate -> why it failed (start or measurement).
        unmet: classes no candidate serves within the SLO, with the best achievable values.
    """

    measured: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    unmet: list[UnmetClass] = field(default_factory=list)
