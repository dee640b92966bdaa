"""The resource-performance lookup table (OServe's profile): per (variant, request class).

JSON on disk, versioned. Built either by measuring a real engine (``oserve profile``) or from the
roofline model for hardware not present; both produce this same structure.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from oserve.errors import ProfileError
from oserve.profiles.cpu_info import CpuIdentity
from oserve.profiles.cpu_speed import CpuSpeed
from oserve.profiles.iteration import IterationTimeModel
from oserve.profiles.quality import VariantQuality
from oserve.types import SLO

__all__ = ["ClassProfile", "VariantProfile", "ProfileTable", "TABLE_VERSION", "MIN_CAPACITY_RPS",
           "MAX_CAPACITY_RPS", "MAX_SECONDS"]

TABLE_VERSION = 1

#: Smallest non-zero per-replica capacity a table may hold, req/s (one request every ~11.6 days).
#: Smaller values are not measurements (a sweep cannot observe them) and, next to capacities of
#: order 1, make the planners' LPs and MILPs ill-conditioned (HiGHS then reports an unknown status).
MIN_CAPACITY_RPS = 1e-6
#: Largest per-replica capacity a table may hold, req/s (a million requests per second per replica,
#: orders above any engine).
MAX_CAPACITY_RPS = 1e6
#: Largest latency or start time a table may hold, s (~11.6 days).
MAX_SECONDS = 1e6


class ClassProfile(BaseModel):
    """Performance of one variant's replica on one request class (served alone)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    capacity_rps: float = Field(..., ge=0, le=MAX_CAPACITY_RPS,
                                description="max sustainable arrival rate meeting the SLO, req/s: 0 (cannot serve "
                                "the class) or in [MIN_CAPACITY_RPS, MAX_CAPACITY_RPS] = [1e-6, 1e6]")
    ttft_s: float = Field(..., ge=0, le=MAX_SECONDS, description="TTFT at that rate (p99 estimate), s")
    tpot_s: float = Field(..., ge=0, le=MAX_SECONDS, description="TPOT at that rate (p99 estimate), s")
    max_concurrency: int = Field(..., ge=0, description="concurrent requests whose KV cache fits")
    throughput_tokens_s: float = Field(0.0, ge=0, description="output tokens/s at capacity")

    @field_validator("capacity_rps")
    @classmethod
    def _capacity_in_range(cls, v: float) -> float:
        if 0 < v < MIN_CAPACITY_RPS:
            raise ValueError(f"capacity_rps must be 0 or in [{MIN_CAPACITY_RPS:g}, {MAX_CAPACITY_RPS:g}] req/s, "
                             f"got {v!r}")
        return v


class VariantProfile(BaseModel):
    """One deployment variant as the planner sees it."""

    model_config = ConfigDict(extra="forbid")
    name: str
    model: str
    precision: str
    tp: int = Field(1, ge=1)
    pp: int = Field(1, ge=1)
    device_type: str = Field(..., description="'cpu' or a GPU type such as 'a100-80gb'")
    devices_per_replica: int = Field(..., ge=1, description="GPUs (or CPU cores) one replica uses")
    memory_per_device_bytes: int = Field(..., ge=0, description="weights + KV cache + overhead per device")
    weights_bytes: int = Field(..., ge=0)
    kv_cache_bytes: int = Field(..., ge=0)
    kv_bytes_per_token: int = Field(..., ge=0)
    max_num_seqs: int = Field(..., ge=1)
    max_num_batched_tokens: int = Field(..., ge=1)
    max_model_len: int = Field(..., ge=1)
    start_time_s: float = Field(..., ge=0, le=MAX_SECONDS, allow_inf_nan=False,
                                description="engine start + weight load + warm-up, s")
    wake_time_s: float | None = Field(
        None, ge=0, le=MAX_SECONDS, allow_inf_nan=False,
        description="decision-to-serving time of a parked replica of this variant (wake + routing shift), s; "
                    "None: oserve.policies.parking.DEFAULT_WAKE_S (measured by bench/park_switch.py)")
    iteration: IterationTimeModel
    classes: dict[str, ClassProfile]
    quality: VariantQuality | None = Field(
        None, description="quality against the reference precision (oserve.profiles.quality); None: not "
                          "measured, counted as full quality")

    @property
    def quality_score(self) -> float:
        """Quality score 0-1 (greedy-token agreement with the reference precision); 1.0 when not measured."""
        return 1.0 if self.quality is None else self.quality.score


class ProfileTable(BaseModel):
    """All variants' profiles for one model family and hardware.

    Raises (on load):
        ProfileError: malformed file, unsupported version, or (``check_against``) a variant or
            class unknown to the config.
    """

    model_config = ConfigDict(extra="forbid")
    version: int = TABLE_VERSION
    source: Literal["measured", "modelled"]
    created: str = Field(..., description="ISO date the table was measured or modelled")
    hardware: dict[str, str] = Field(default_factory=dict)
    measured_on: CpuIdentity | None = Field(
        None, description="CPU model and ISA flags a CPU table was measured on (oserve.profiles.cpu_info)")
    measured_speed: CpuSpeed | None = Field(
        None, description="one core's GEMV/GEMM speed when a CPU table was measured (oserve.profiles.cpu_speed)")
    software: dict[str, str] = Field(default_factory=dict)
    slo: SLO
    class_names: list[str]
    variants: dict[str, VariantProfile]

    def capacity(self, variant: str, cls: str) -> float:
        """SLO-constrained capacity of one replica of ``variant`` for class ``cls``, req/s."""
        try:
            return self.variants[variant].classes[cls].capacity_rps
        except KeyError as exc:
            raise ProfileError(f"no profile for variant {variant!r}, class {cls!r}") from exc

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.model_dump_json(indent=2))

    @classmethod
    def load(cls, path: str | Path) -> ProfileTable:
        p = Path(path)
        try:
            raw = json.loads(p.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:  # missing, binary or not JSON
            raise ProfileError(f"cannot read profile table {p}: {exc}") from exc
        if not isinstance(raw, dict):
            raise ProfileError(f"profile table {p} is not a JSON object (got {type(raw).__name__})")
        if raw.get("version") != TABLE_VERSION:
            raise ProfileError(f"profile table {p} has version {raw.get('version')!r}, expected {TABLE_VERSION}")
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise ProfileError(f"profile table {p} is malformed: {exc}") from exc

    def check_model(self, model: str) -> None:
        """Raise ProfileError if any variant of this table profiles another model than ``model``."""
        others = sorted({v.model for v in self.variants.values() if v.model != model})
        if others:
            raise ProfileError(f"profile table is for model(s) {others}, not {model!r}")

    def check_against(self, variants: list[str], class_names: list[str]) -> None:
        """Raise ProfileError if the config names a variant or class this table lacks."""
        missing = [v for v in variants if v not in self.variants]
        if missing:
            raise ProfileError(f"profile table has no variant(s) {missing}; it has {sorted(self.variants)}")
        missing_c = [c for c in class_names if c not in self.class_names]
        if missing_c:
            raise ProfileError(f"profile table has no class(es) {missing_c}; it has {self.class_names}")
