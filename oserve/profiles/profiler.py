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

The sweep is resumable: after each measurement the raw timings go to a state file
(``PROFILE.json.sweep.json``); a rerun skips what is there if the config is unchanged.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import platform
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from oserve.backends.base import Backend, Replica, ReplicaSpec, SamplingParams
from oserve.clock import Clock, WallClock
from oserve.config import ClassesConfig
from oserve.errors import ConfigError, ProfileError
from oserve.profiles.capacity import build_table
from oserve.profiles.fit import fit_iteration_model
from oserve.profiles.table import SLO, ProfileTable
from oserve.profiles.variants import Variant, get_model

__all__ = ["SweepConfig", "ProfileConfig", "Profiler", "load_profile_config", "replica_spec"]

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
    seed: int = 0


class ProfileConfig(BaseModel):
    """``oserve profile`` config (YAML).

    Attributes:
        model: checkpoint path or name the backend loads.
        arch: built-in architecture name (``oserve.profiles.variants.MODELS``).
        backend: backend name (``vllm``).
        device_type: ``cpu`` or a GPU type of ``oserve.profiles.hardware.HARDWARE``.
        variants: per-variant overrides of :class:`~oserve.profiles.variants.Variant` fields
            (``precision``, ``tp``, ``devices_per_replica``, ``max_num_seqs``...).
        sweep: what to measure.
        slo: targets for the capacity columns.
    """

    model_config = ConfigDict(extra="forbid")
    model: str
    arch: str
    backend: str = "vllm"
    device_type: str = "cpu"
    variants: list[dict[str, Any]] = Field(..., min_length=1)
    sweep: SweepConfig = SweepConfig()
    slo: SLO = SLO()
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
    import yaml

    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read profile config {path}: {exc}", field="config") from exc
    try:
        return ProfileConfig.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"profile config {path}: {field}: {err['msg']}", field=field) from None


def replica_spec(config: ProfileConfig, variant: Variant) -> ReplicaSpec:
    """The ReplicaSpec that starts ``variant`` of ``config.model``."""
    cpu = variant.hardware.kind == "cpu"
    model = config.model
    if model == "default":
        from oserve.models import CHECKPOINT_PRECISIONS, ensure_default_model, ensure_precision_checkpoint

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
        progress: show a tqdm progress bar.
    """

    def __init__(self, backend: Backend, config: ProfileConfig, clock: Clock | None = None,
                 progress: bool = True) -> None:
        self.backend = backend
        self.config = config
        self.clock = clock or WallClock()
        self.progress = progress

    # ---- state ------------------------------------------------------------------------------
    def _load_state(self, path: Path) -> dict[str, Any]:
        if path.exists():
            try:
                state = json.loads(path.read_text())
            except json.JSONDecodeError as exc:
                raise ProfileError(f"sweep state {path} is not JSON: {exc}") from exc
            if state.get("config_digest") == self.config.digest():
                return state
            raise ProfileError(f"sweep state {path} belongs to another config; delete it to start over")
        return {"config_digest": self.config.digest(), "variants": {}}

    @staticmethod
    def _save_state(path: Path, state: dict[str, Any]) -> None:
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        tmp.replace(path)

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

    async def _profile_variant(self, v: Variant, vs: dict[str, Any], path: Path, state: dict[str, Any],
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
                    self._save_state(path, state)
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
                self._save_state(path, state)
                tick(1)
            stats = await replica.stats()
            peak = stats.extra.get("peak_memory_bytes") if stats.extra else None
            if peak:
                vs["peak_memory_bytes"] = int(peak)
            vs["done"] = True
            self._save_state(path, state)
        finally:
            await replica.stop()

    async def run(self, out: str | Path) -> ProfileTable:
        """Measure every variant (resuming from ``<out>.sweep.json``), fit, and save the table.

        Args:
            out: path of the profile table JSON to write.

        Returns:
            The measured ``ProfileTable`` (also written to ``out``).

        Raises:
            EngineStartError: a replica failed to start (the sweep state keeps what was measured).
            ProfileError: a fit failed or the state file belongs to another config.
        """
        out = Path(out)
        state_path = out.with_name(out.name + ".sweep.json")
        state = self._load_state(state_path)
        variants = self.config.build_variants()
        sw = self.config.sweep
        per_variant = len(sw.prompt_tokens) * sw.repeats + len(sw.batch_sizes)
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=per_variant * len(variants), desc="profile", unit="pt")
        tick = bar.update if bar is not None else (lambda n: None)
        try:
            for v in variants:
                vs = state["variants"].setdefault(v.name, {})
                if vs.get("done"):
                    tick(per_variant)
                    continue
                if bar is not None:
                    bar.set_postfix_str(v.name)
                await self._profile_variant(v, vs, state_path, state, tick)
        finally:
            if bar is not None:
                bar.close()
        models = {}
        for v in variants:
            vs = state["variants"][v.name]
            models[v.name] = fit_iteration_model(vs["prefill"], vs["decode"])
        table = build_table(
            variants, models, source="measured", slo=self.config.slo, scheme=self.config.classes.to_scheme(),
            start_times_s={v.name: state["variants"][v.name]["start_time_s"] for v in variants},
            memory_per_device_bytes={n: s["peak_memory_bytes"] for n, s in state["variants"].items()
                                     if "peak_memory_bytes" in s},
            hardware={"device_type": self.config.device_type, "machine": platform.machine(),
                      "processor": platform.processor() or platform.machine()},
            software=_software_versions(self.backend),
            created=date.today().isoformat(),
        )
        if self.config.device_type == "cpu":
            from oserve.profiles.cpu_info import current_cpu

            table = table.model_copy(update={"measured_on": current_cpu()})
        table.save(out)
        return table


def _software_versions(backend: Backend) -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version(), "backend": backend.name}
    for pkg in ("oserve", "vllm", "torch"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return out
