"""Measure real replicas and turn the timings into a profile table.

For each variant of a :class:`ProfileConfig` the profiler starts one replica through a
:class:`~oserve.backends.base.Backend` (timing the start), then

* **prefill**: sends lone requests of ``prompt_tokens`` random token ids with ``max_tokens=1``;
  TTFT is the prefill time for that many prompt tokens;
* **decode**: sends ``B`` concurrent requests (``decode_prompt_tokens`` each, ``decode_output_tokens``
  outputs, ``ignore_eos``) for each batch size ``B``; the gap between a request's consecutive
  tokens is one decode step, recorded with the batch size and the KV tokens the batch holds then,
  ``B * (prompt + tokens generated so far)``; the median over the batch is kept per step
  (batch sizes above the variant's ``max_num_seqs`` are skipped: they would queue).

Then it fits the iteration-time model (:mod:`oserve.profiles.fit`) and builds the table with the
same :func:`~oserve.profiles.capacity.build_table` the roofline uses. Random prompts (seeded) are
fresh per request, so prefix caching cannot shortcut a prefill.

The sweep is resumable and robust (:mod:`oserve.profiles.sweep`): after each measurement the raw
timings go to a state file (``PROFILE.json.sweep.json``) under the candidate's name and digest, so a
rerun skips what is there even after the config changed, as long as that candidate's own settings
did not. Candidates that cannot run on this machine (cores, GPUs, memory) are skipped with a reason
before anything starts; a candidate that fails to start or to answer is recorded as failed and the
sweep goes on. An SLO that no candidate meets for any class is reported with the best achievable
TTFT and TPOT instead of writing an all-zero table.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import platform
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from oserve.backends.base import Backend, Replica, ReplicaSpec, SamplingParams
from oserve.clock import Clock, WallClock
from oserve.config import ClassesConfig, ComponentConfig
from oserve.errors import ConfigError, OserveError, ProfileError
from oserve.profiles.capacity import build_table
from oserve.profiles.fit import fit_iteration_model
from oserve.profiles.sweep import HostResources, SweepReport, SweepState, candidate_digest, unfit_reason, unmet_classes
from oserve.profiles.table import ProfileTable
from oserve.profiles.variants import Variant, get_model
from oserve.types import SLO

__all__ = ["SweepConfig", "ProfileConfig", "Profiler", "load_profile_config", "replica_spec"]

log = logging.getLogger(__name__)

_DTYPE = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
_QUANT = {"fp8": "fp8", "int4": "awq", "int8": None}  # int8: the checkpoint's compressed-tensors config


class SweepConfig(BaseModel):
    """What to measure per variant (token counts in tokens)."""

    model_config = ConfigDict(extra="forbid")
    prompt_tokens: list[int] = Field([16, 64, 256, 1024], min_length=3, description="prefill sizes, tokens")
    repeats: int = Field(2, ge=1, description="lone requests per prefill size")
    batch_sizes: list[int] = Field([1, 2, 4, 8], min_length=1, description="decode batch sizes")
    decode_prompt_tokens: int = Field(64, ge=1, description="prompt tokens of decode requests")
    decode_output_tokens: int = Field(32, ge=3, description="output tokens of decode requests")
    seed: int = Field(0, description="seed of the random prompts")


class ProfileConfig(BaseModel):
    """``oserve profile`` config (YAML).

    Attributes:
        model: checkpoint path or name the backend loads.
        arch: built-in architecture name (``oserve.profiles.variants.MODELS``).
        backend: the engine backend, ``{kind, params}`` (default ``vllm``).
        device_type: ``cpu`` or a GPU type of ``oserve.profiles.hardware.HARDWARE``.
        variants: per-variant overrides of :class:`~oserve.profiles.variants.Variant` fields
            (``precision``, ``tp``, ``devices_per_replica``, ``max_num_seqs``...).
        sweep: what to measure.
        slo: targets for the capacity columns.
    """

    model_config = ConfigDict(extra="forbid")
    model: str = Field(..., description="'default' (the embedded SmolLM2-135M-Instruct) or a checkpoint folder")
    arch: str = Field(..., description="built-in architecture name (oserve.profiles.variants.MODELS)")
    backend: ComponentConfig = Field(default_factory=lambda: ComponentConfig(kind="vllm"),
                                     description="engine backend: {kind, params}, as in the serve config")
    device_type: str = Field("cpu", description="'cpu' or a GPU type of oserve.profiles.hardware.HARDWARE")
    variants: list[dict[str, Any]] = Field(..., min_length=1, description="per-variant Variant field overrides")
    sweep: SweepConfig = Field(default_factory=SweepConfig, description="what to measure")
    slo: SLO = Field(default_factory=SLO, description="targets of the table's capacity columns")
    classes: ClassesConfig = Field(default_factory=ClassesConfig,
                                   description="request classes of the table (default: input 2048, output 256)")

    def build_variants(self) -> list[Variant]:
        """The variants, validated. Raises ConfigError naming ``variants[i].<field>``."""
        out = []
        for i, over in enumerate(self.variants):
            try:
                out.append(Variant(model=get_model(self.arch), device_type=self.device_type, **over))
            except ConfigError as exc:
                raise ConfigError(str(exc), field=f"variants[{i}].{exc.field}", allowed=exc.allowed) from None
        names = [v.name for v in out]
        if len(set(names)) != len(names):
            raise ConfigError(f"variant names are not unique: {names}", field="variants", allowed="distinct variants")
        return out

    def digest(self) -> str:
        """Identity of what is measured; the SLO and the classes only shape the table built from it."""
        return hashlib.sha256(self.model_dump_json(exclude={"classes", "slo"}).encode()).hexdigest()[:16]


def load_profile_config(path: str | Path) -> ProfileConfig:
    """Read a YAML profile config. Raises ConfigError naming the field."""
    from oserve.yaml_config import load_yaml_model

    return load_yaml_model(path, ProfileConfig)


def replica_spec(config: ProfileConfig, variant: Variant) -> ReplicaSpec:
    """The ReplicaSpec that starts ``variant`` of ``config.model``."""
    cpu = variant.hardware.kind == "cpu"
    model = config.model
    if model == "default":
        from oserve.backends.embedded_model import (
            CHECKPOINT_PRECISIONS,
            ensure_default_model,
            ensure_precision_checkpoint,
        )

        model = str(ensure_precision_checkpoint(variant.precision) if variant.precision in CHECKPOINT_PRECISIONS
                    else ensure_default_model())
    return ReplicaSpec(
        variant=variant.name,
        model=model,
        served_model_name=variant.model.name,
        dtype=_DTYPE.get(variant.precision, "auto"),
        quantization=_QUANT.get(variant.precision),
        tensor_parallel_size=variant.tp,
        pipeline_parallel_size=variant.pp,
        max_num_seqs=variant.max_num_seqs,
        max_model_len=variant.max_model_len,
        max_num_batched_tokens=variant.max_num_batched_tokens,
        kv_cache_bytes=variant.kv_cache_total_bytes if cpu else variant.kv_cache_bytes,
        cpu_cores=tuple(range(variant.devices)) if cpu else None,
        devices=None if cpu else tuple(range(variant.devices)),
    )


class Profiler:
    """Runs a :class:`ProfileConfig` sweep on a backend.

    Args:
        backend: starts the replicas.
        config: what to measure.
        clock: time source (wall clock by default; tests pass a simulated one).
        progress: show a tqdm progress bar (on stderr).
        host: what this machine offers (detected when None); candidates that do not fit are skipped.
    """

    def __init__(self, backend: Backend, config: ProfileConfig, clock: Clock | None = None,
                 progress: bool = True, host: HostResources | None = None) -> None:
        self.backend = backend
        self.config = config
        self.clock = clock or WallClock()
        self.progress = progress
        self.host = host

    # ---- measurement -------------------------------------------------------------------------
    def _prompt(self, rng: np.random.Generator, tokens: int, vocab: int) -> list[int]:
        return rng.integers(100, max(101, vocab - 100), size=tokens).tolist()

    async def _ttft(self, replica: Replica, rid: str, prompt: list[int]) -> float:
        t0 = self.clock.now()
        params = SamplingParams(max_tokens=1, temperature=0.0, ignore_eos=True)
        ttft = None
        async for _chunk in replica.generate(rid, prompt, params):
            if ttft is None:
                ttft = self.clock.now() - t0
        if ttft is None:
            raise ProfileError(f"request {rid} returned no token")
        return ttft

    async def _decode(self, replica: Replica, tag: str, batch: int, rng: np.random.Generator,
                      vocab: int) -> list[list[float]]:
        sw = self.config.sweep
        params = SamplingParams(max_tokens=sw.decode_output_tokens, temperature=0.0, ignore_eos=True)

        async def one(i: int, prompt: list[int]) -> dict[int, float]:
            stamps: dict[int, float] = {}
            async for chunk in replica.generate(f"{tag}-b{batch}-{i}", prompt, params):
                stamps[chunk.completion_tokens] = self.clock.now()
            return stamps

        prompts = [self._prompt(rng, sw.decode_prompt_tokens, vocab) for _ in range(batch)]
        results = await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts)))
        rows = []
        for k in range(2, sw.decode_output_tokens + 1):
            gaps = []
            for st in results:
                prev = max((j for j in st if j < k), default=None)
                if k in st and prev is not None:
                    gaps.append((st[k] - st[prev]) / (k - prev))
            if gaps:
                kv = batch * (sw.decode_prompt_tokens + k - 1)
                rows.append([float(batch), float(kv), float(np.median(gaps))])
        return rows

    async def _profile_variant(self, v: Variant, vs: dict[str, Any], state: SweepState,
                               tick: Callable[[int], None]) -> None:
        sw = self.config.sweep
        rng = np.random.default_rng([sw.seed, int(hashlib.sha256(v.name.encode()).hexdigest()[:8], 16)])
        spec = replica_spec(self.config, v)
        t0 = self.clock.now()
        replica = await self.backend.start_replica(spec, f"profile-{v.name}")
        if "start_time_s" not in vs:
            vs["start_time_s"] = self.clock.now() - t0
        try:
            vocab = v.model.vocab
            # warm-up request (first request pays lazy initialisation)
            await self._ttft(replica, f"{v.name}-warmup", self._prompt(rng, 8, vocab))
            done_p = {(int(t), int(r)) for t, r in vs.setdefault("prefill_keys", [])}
            for t in sw.prompt_tokens:
                for r in range(sw.repeats):
                    if (t, r) in done_p:
                        continue
                    s = await self._ttft(replica, f"{v.name}-p{t}-{r}", self._prompt(rng, t, vocab))
                    vs.setdefault("prefill", []).append([float(t), s])
                    vs["prefill_keys"].append([t, r])
                    state.save()
                    tick(1)
            done_b = set(vs.setdefault("decode_batches", []))
            for b in sw.batch_sizes:
                if b in done_b:
                    continue
                if b > v.max_num_seqs:  # would queue: not one decode batch any more
                    tick(1)
                    continue
                vs.setdefault("decode", []).extend(await self._decode(replica, v.name, b, rng, vocab))
                vs["decode_batches"].append(b)
                state.save()
                tick(1)
            stats = await replica.stats()
            peak = stats.extra.get("peak_memory_bytes") if stats.extra else None
            if peak:
                vs["peak_memory_bytes"] = int(peak)
            vs["done"] = True
            state.save()
        finally:
            await replica.stop()

    async def run(self, out: str | Path) -> ProfileTable:
        """Measure, fit and save the table; see :meth:`sweep` (this returns only the table)."""
        table, _ = await self.sweep(out)
        return table

    async def sweep(self, out: str | Path) -> tuple[ProfileTable, SweepReport]:
        """Measure every candidate that fits here (resuming from ``<out>.sweep.json``), fit, save the table.

        Args:
            out: path of the profile table JSON to write.

        Returns:
            The measured ``ProfileTable`` (also written to ``out``; only candidates measured in full)
            and the report: candidates skipped (do not fit this machine) or failed, and classes no
            candidate serves within the SLO with the best achievable TTFT/TPOT.

        Raises:
            ProfileError: no candidate could be measured (the reasons are listed), a fit failed, or
                the SLO is met for no class by any candidate (the best achievable values are listed;
                the measurements stay in the state file, so rerunning with a looser SLO measures
                nothing again).
        """
        out = Path(out)
        variants = self.config.build_variants()
        c = self.config
        state = SweepState(out.with_name(out.name + ".sweep.json"),
                           {v.name: candidate_digest(c.model, c.backend, c.sweep, v) for v in variants},
                           legacy_digest=c.digest())
        host = self.host or HostResources.detect()
        report = SweepReport()
        sw = c.sweep
        per_variant = len(sw.prompt_tokens) * sw.repeats + len(sw.batch_sizes)
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=per_variant * len(variants), desc="profile", unit="pt")
        tick = bar.update if bar is not None else (lambda n: None)
        try:
            for v in variants:
                reason = unfit_reason(v, host)
                if reason is not None:
                    report.skipped[v.name] = reason
                    log.warning("skipping candidate %s: %s", v.name, reason)
                    tick(per_variant)
                    continue
                vs = state.entry(v.name)
                if vs.get("done"):
                    report.measured.append(v.name)
                    tick(per_variant)
                    continue
                if bar is not None:
                    bar.set_postfix_str(v.name)
                before = bar.n if bar is not None else 0
                try:
                    await self._profile_variant(v, vs, state, tick)
                except OserveError as exc:  # EngineStartError, ReplicaError, ProfileError
                    vs["failed"] = f"{type(exc).__name__}: {exc}"[:500]
                    state.save()
                    report.failed[v.name] = vs["failed"]
                    log.warning("candidate %s failed, going on with the others: %s", v.name, vs["failed"])
                    if bar is not None:
                        tick(max(0, per_variant - (bar.n - before)))
                    continue
                report.measured.append(v.name)
        finally:
            if bar is not None:
                bar.close()
        measured = [v for v in variants if v.name in report.measured]
        if not measured:
            why = "; ".join(f"{n}: {r}" for n, r in {**report.skipped, **report.failed}.items())
            raise ProfileError(f"no candidate could be measured ({why})")
        records = {v.name: state.entry(v.name) for v in measured}
        models = {n: fit_iteration_model(r["prefill"], r["decode"]) for n, r in records.items()}
        table = build_table(
            measured, models, source="measured", slo=c.slo, scheme=c.classes.to_scheme(),
            start_times_s={n: r["start_time_s"] for n, r in records.items()},
            memory_per_device_bytes={n: r["peak_memory_bytes"] for n, r in records.items() if "peak_memory_bytes" in r},
            hardware={"device_type": c.device_type, "machine": platform.machine(),
                      "processor": platform.processor() or platform.machine()},
            software=_software_versions(self.backend),
            created=date.today().isoformat(),
        )
        report.unmet = unmet_classes(table)
        if not any(p.capacity_rps > 0 for v in table.variants.values() for p in v.classes.values()):
            best = "; ".join(u.describe() for u in report.unmet)
            raise ProfileError(f"no candidate meets the SLO (TTFT {c.slo.ttft_s:g} s, TPOT {c.slo.tpot_s:g} s) for "
                               f"any class; best achievable: {best}. Relax slo.ttft_s / slo.tpot_s and rerun "
                               "(the measurements are kept); no table was written")
        for u in report.unmet:
            log.warning("no candidate meets the SLO for class %s", u.describe())
        if self.config.device_type == "cpu":
            from oserve.profiles.cpu_info import current_cpu
            from oserve.profiles.cpu_speed import measure_cpu_speed

            try:  # the engines are stopped: the core speed the table's timings go with (~3 s)
                speed = measure_cpu_speed()
            except ImportError as exc:  # torch missing: the table is still right for this CPU identity
                log.warning("cannot measure the CPU speed (%s); the table records none", exc)
                speed = None
            table = table.model_copy(update={"measured_on": current_cpu(), "measured_speed": speed})
        table.save(out)
        return table, report


def _software_versions(backend: Backend) -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version(), "backend": backend.name}
    for pkg in ("oserve", "vllm", "torch"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return out
