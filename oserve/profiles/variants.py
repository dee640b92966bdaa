"""Deployment variants: a model architecture, a precision, a parallel layout and batch limits.

A :class:`Variant` is validated against its device type: building an impossible one raises
:class:`~oserve.errors.ConfigError` naming the field (fp8 on a GPU without FP8 tensor cores, a
TP degree that splits no whole attention heads, weights that do not fit the devices, a context
length whose KV cache does not fit). :func:`catalogue` expands a model and a device type into
every valid candidate.

Memory accounting follows vLLM: a replica may use ``gpu_memory_utilization`` of each device;
weights are split evenly over ``tp * pp`` devices; ``activation_reserve_bytes`` per device is
kept for activations and CUDA graphs; the rest is KV cache. KV bytes per token =
``2 (K and V) * layers * kv_heads * head_dim * bytes(kv dtype)``.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from oserve.errors import ConfigError
from oserve.profiles.hardware import Hardware, get_hardware

__all__ = [
    "ModelArch",
    "MODELS",
    "get_model",
    "Precision",
    "PRECISIONS",
    "Variant",
    "catalogue",
    "WEIGHT_BYTES",
    "COMPUTE_DTYPE",
]

Precision = Literal["fp32", "bf16", "fp16", "fp8", "int8", "int4"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16", "fp8", "int8", "int4")

#: bytes per weight of the quantised linear layers; int4 (AWQ/GPTQ, group size 128) adds one
#: fp16 scale and one 4-bit zero per 128 weights: 0.5 + (2 + 0.5) / 128.
WEIGHT_BYTES: dict[str, float] = {
    "fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5 + 2.5 / 128,
}
#: dtype the GEMMs run in: int8 is W8A8 (int8 tensor cores); int4 is weight-only (dequantised
#: to fp16 inside the kernel, so it computes at the fp16 rate).
COMPUTE_DTYPE: dict[str, str] = {
    "fp32": "fp32", "bf16": "fp16", "fp16": "fp16", "fp8": "fp8", "int8": "int8", "int4": "fp16",
}


class ModelArch(BaseModel):
    """Architecture numbers of a decoder-only transformer (Llama family: gated MLP, GQA).

    Attributes:
        name: short lowercase name used in variant names, e.g. ``"llama-3-8b"``.
        layers / hidden / heads / kv_heads / intermediate / vocab: as in the HF config.
        params: total parameter count (including embeddings).
        tied_embeddings: the LM head shares the embedding matrix.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    layers: int = Field(..., ge=1)
    hidden: int = Field(..., ge=1)
    heads: int = Field(..., ge=1)
    kv_heads: int = Field(..., ge=1)
    intermediate: int = Field(..., ge=1)
    vocab: int = Field(..., ge=1)
    params: int = Field(..., ge=1, description="total parameters")
    tied_embeddings: bool = False
    max_position_embeddings: int = Field(4096, ge=1, description="longest context the model supports, tokens")
    hf_id: str = ""

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def layer_linear_params(self) -> int:
        """Weights of the linear layers of ONE decoder layer (QKV, output, gate/up/down)."""
        kv = self.kv_heads * self.head_dim
        return self.hidden * (self.hidden + 2 * kv) + self.hidden * self.hidden + 3 * self.hidden * self.intermediate

    @property
    def linear_params(self) -> int:
        """Weights every token multiplies through (all decoder layers), excluding embeddings."""
        return self.layers * self.layer_linear_params

    @property
    def embedding_params(self) -> int:
        """Embedding (+ untied LM head) parameters."""
        return self.vocab * self.hidden * (1 if self.tied_embeddings else 2)

    def kv_bytes_per_token(self, kv_dtype_bytes: float = 2.0) -> float:
        """KV-cache bytes one token occupies over the whole model, bytes."""
        return 2 * self.layers * self.kv_heads * self.head_dim * kv_dtype_bytes

    def weights_bytes(self, precision: str) -> float:
        """Weight bytes: linear layers at ``precision``, embeddings/LM head at 16 bit (fp32: 32 bit)."""
        other = self.params - self.linear_params
        emb_bytes = 4.0 if precision == "fp32" else 2.0
        return self.linear_params * WEIGHT_BYTES[precision] + max(other, 0) * emb_bytes


MODELS: dict[str, ModelArch] = {
    m.name: m
    for m in (
        ModelArch(name="smollm2-135m", layers=30, hidden=576, heads=9, kv_heads=3, intermediate=1536,
                  vocab=49152, params=134_515_008, tied_embeddings=True,
                  hf_id="HuggingFaceTB/SmolLM2-135M", max_position_embeddings=8192),
        ModelArch(name="llama-2-7b", layers=32, hidden=4096, heads=32, kv_heads=32, intermediate=11008,
                  vocab=32000, params=6_738_415_616, hf_id="meta-llama/Llama-2-7b-hf", max_position_embeddings=4096),
        ModelArch(name="llama-3-8b", layers=32, hidden=4096, heads=32, kv_heads=8, intermediate=14336,
                  vocab=128256, params=8_030_261_248, hf_id="meta-llama/Meta-Llama-3-8B", max_position_embeddings=8192),
        ModelArch(name="llama-2-70b", layers=80, hidden=8192, heads=64, kv_heads=8, intermediate=28672,
                  vocab=32000, params=68_976_648_192, hf_id="meta-llama/Llama-2-70b-hf", max_position_embeddings=4096),
        ModelArch(name="llama-3-70b", layers=80, hidden=8192, heads=64, kv_heads=8, intermediate=28672,
                  vocab=128256, params=70_553_706_496,
                  hf_id="meta-llama/Meta-Llama-3-70B", max_position_embeddings=8192),
        ModelArch(name="mistral-7b", layers=32, hidden=4096, heads=32, kv_heads=8, intermediate=14336,
                  vocab=32000, params=7_241_732_096, hf_id="mistralai/Mistral-7B-v0.1", max_position_embeddings=32768),
        ModelArch(name="qwen2-7b", layers=28, hidden=3584, heads=28, kv_heads=4, intermediate=18944,
                  vocab=152064, params=7_615_616_512, hf_id="Qwen/Qwen2-7B", max_position_embeddings=32768),
    )
}


def get_model(name: str) -> ModelArch:
    """Built-in architecture by name. Raises ConfigError (field ``model``) if unknown."""
    try:
        return MODELS[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}", field="model", allowed=", ".join(sorted(MODELS))) from None


def _pydantic_to_config_error(exc: ValidationError) -> ConfigError:
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err.get("loc", ())) or None
    return ConfigError(f"invalid variant: {field}: {err.get('msg')}", field=field, allowed=str(err.get("ctx", "")))


class Variant(BaseModel):
    """One deployment variant of a model.

    Construct with keyword arguments; ``model`` may be a :class:`ModelArch` or a built-in name.
    ``devices_per_replica`` counts GPUs (must equal ``tp * pp``) or, for ``device_type='cpu'``,
    cores (TP/PP must be 1). ``kv_cache_bytes`` None means "what is left": per device,
    ``memory * gpu_memory_utilization - weights/(tp*pp) - activation_reserve_bytes``.

    Raises:
        ConfigError: naming the field: unknown precision/device; fp8 without FP8 tensor cores;
            int4/fp8/fp16 on CPU; TP not dividing heads or KV heads (vLLM replicates KV
            heads when TP is a multiple of them, which is allowed); devices_per_replica !=
            tp*pp; weights not fitting; KV cache smaller than one max_model_len sequence;
            max_num_batched_tokens < max_num_seqs.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    model: ModelArch
    precision: Precision = "fp16"
    kv_cache_dtype: Literal["auto", "fp8"] = Field("auto", description="auto: 16-bit (fp32 for fp32)")
    tp: int = Field(1, ge=1, le=64)
    pp: int = Field(1, ge=1, le=64)
    device_type: str = "a100-80gb"
    devices_per_replica: int | None = Field(None, ge=1, description="GPUs, or CPU cores; None: tp*pp")
    max_num_seqs: int = Field(256, ge=1)
    max_num_batched_tokens: int = Field(8192, ge=1)
    max_model_len: int = Field(4096, ge=16)
    kv_cache_bytes: int | None = Field(None, gt=0, description="KV cache of the whole replica, bytes")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    activation_reserve_bytes: int = Field(1_500_000_000, ge=0, description="per device, bytes")
    engine: str = Field(
        "vllm", pattern=r"^[a-z0-9][a-z0-9_.-]*$",
        description="the backend (engine kind) that runs this variant, by its registered name: 'vllm' (in-process), "
        "'process-vllm' / 'process-sglang' / 'process-trtllm' (the engine's own OpenAI server as a child "
        "process), 'trtllm' (TensorRT-LLM's LLM API) ...; a non-vllm engine is part of the variant's name, so "
        "one table and one plan can hold the same layout on several engines")
    name_override: str | None = None

    def __init__(self, **data: Any) -> None:
        if isinstance(data.get("model"), str):
            data["model"] = get_model(data["model"])
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise _pydantic_to_config_error(exc) from None
        self._check()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Variant:
        """Build from a plain dict (YAML). Raises ConfigError."""
        return cls(**data)

    # ---- derived quantities -------------------------------------------------------------------
    @cached_property
    def hardware(self) -> Hardware:
        return get_hardware(self.device_type)

    @property
    def devices(self) -> int:
        """Devices (GPUs or CPU cores) of one replica."""
        return self.devices_per_replica if self.devices_per_replica is not None else self.tp * self.pp

    @property
    def name(self) -> str:
        """Stable name: ``<model>-<precision>-tp<tp>[-pp<pp>][-kvfp8][-s<max_num_seqs>][-<engine>]`` on GPUs,
        ``<model>-<precision>-<cores>c-s<max_num_seqs>[-<engine>]`` on CPU; the engine is named when it is
        not ``vllm``."""
        if self.name_override:
            return self.name_override
        suffix = "" if self.engine == "vllm" else f"-{self.engine}"
        if self.hardware.kind == "cpu":
            return f"{self.model.name}-{self.precision}-{self.devices}c-s{self.max_num_seqs}{suffix}"
        parts = [self.model.name, self.precision, f"tp{self.tp}"]
        if self.pp > 1:
            parts.append(f"pp{self.pp}")
        if self.kv_cache_dtype == "fp8":
            parts.append("kvfp8")
        if self.max_num_seqs != 256:
            parts.append(f"s{self.max_num_seqs}")
        return "-".join(parts) + suffix

    @property
    def compute_dtype(self) -> str:
        return COMPUTE_DTYPE[self.precision]

    @property
    def kv_dtype_bytes(self) -> float:
        if self.kv_cache_dtype == "fp8":
            return 1.0
        return 4.0 if self.precision == "fp32" else 2.0

    @property
    def kv_bytes_per_token(self) -> int:
        """KV bytes per token over the whole replica."""
        return int(self.model.kv_bytes_per_token(self.kv_dtype_bytes))

    @property
    def weights_bytes(self) -> int:
        """Weight bytes of the whole replica."""
        return int(self.model.weights_bytes(self.precision))

    @property
    def model_devices(self) -> int:
        """Devices the weights are split over (tp*pp; 1 on CPU)."""
        return 1 if self.hardware.kind == "cpu" else self.tp * self.pp

    @property
    def weights_per_device_bytes(self) -> int:
        return int(self.weights_bytes / self.model_devices)

    @property
    def usable_per_device_bytes(self) -> int:
        hw = self.hardware
        if hw.kind == "cpu":
            return hw.memory_bytes
        return int(hw.memory_bytes * self.gpu_memory_utilization)

    @property
    def kv_cache_total_bytes(self) -> int:
        """KV-cache bytes of the replica (given, or what is left after weights and reserve)."""
        if self.kv_cache_bytes is not None:
            return self.kv_cache_bytes
        if self.hardware.kind == "cpu":
            return 4 * 1024**3  # vLLM-CPU default VLLM_CPU_KVCACHE_SPACE=4 (GiB)
        free = self.usable_per_device_bytes - self.weights_per_device_bytes - self.activation_reserve_bytes
        return max(0, free) * self.model_devices

    @property
    def kv_capacity_tokens(self) -> int:
        """Tokens the KV cache holds."""
        return int(self.kv_cache_total_bytes // max(1, self.kv_bytes_per_token))

    @property
    def memory_per_device_bytes(self) -> int:
        """Weights + KV + reserve per device, bytes."""
        reserve = 0 if self.hardware.kind == "cpu" else self.activation_reserve_bytes
        return int(self.weights_per_device_bytes + self.kv_cache_total_bytes / self.model_devices + reserve)

    # ---- validation ---------------------------------------------------------------------------
    def _check(self) -> None:
        hw = get_hardware(self.device_type)
        m = self.model
        if hw.kind == "cpu":
            # int8 on CPU is W8A8 (compressed-tensors, vLLM's CPUInt8ScaledMMLinearKernel).
            if self.precision not in ("fp32", "bf16", "int8"):
                raise ConfigError(f"precision {self.precision} is not supported on CPU", field="precision",
                                  allowed="fp32, bf16, int8 on cpu")
            if self.tp != 1 or self.pp != 1:
                raise ConfigError("CPU variants use cores, not TP/PP", field="tp", allowed="tp=1, pp=1 on cpu")
            if self.kv_cache_dtype != "auto":
                raise ConfigError("fp8 KV cache is GPU-only", field="kv_cache_dtype", allowed="auto on cpu")
        else:
            # fp8 weights/activations need FP8 tensor cores. vLLM does accept an fp8 KV cache on
            # Ampere, but through a software conversion path that LLM-Inference-Bench measured
            # 1.2-7x slower than fp16 KV on A100 (Fig. 3 data), which this model does not cover.
            if (self.precision == "fp8" or self.kv_cache_dtype == "fp8") and not hw.supports_fp8:
                raise ConfigError(
                    f"fp8 needs FP8 tensor cores (Hopper or Ada); {hw.name} has none",
                    field="precision" if self.precision == "fp8" else "kv_cache_dtype",
                    allowed="fp32, bf16, fp16, int8, int4 (KV cache: auto) on " + hw.name,
                )
            if self.devices != self.tp * self.pp:
                raise ConfigError(f"devices_per_replica={self.devices} but tp*pp={self.tp * self.pp}",
                                  field="devices_per_replica", allowed=f"{self.tp * self.pp}")
            if m.heads % self.tp:
                raise ConfigError(f"tp={self.tp} does not divide {m.name}'s {m.heads} attention heads",
                                  field="tp", allowed=f"divisors of {m.heads}")
            if m.kv_heads % self.tp and self.tp % m.kv_heads:
                raise ConfigError(
                    f"tp={self.tp} neither divides nor is a multiple of {m.name}'s {m.kv_heads} KV heads",
                    field="tp", allowed=f"divisors or multiples of {m.kv_heads}")
            if self.pp > m.layers:
                raise ConfigError(f"pp={self.pp} exceeds {m.layers} layers", field="pp", allowed=f"1..{m.layers}")
        if self.max_model_len > m.max_position_embeddings:
            raise ConfigError(f"max_model_len={self.max_model_len} exceeds {m.name}'s context",
                              field="max_model_len", allowed=f"<= {m.max_position_embeddings}")
        if self.max_num_batched_tokens < self.max_num_seqs:
            raise ConfigError("max_num_batched_tokens must be >= max_num_seqs", field="max_num_batched_tokens",
                              allowed=f">= {self.max_num_seqs}")
        need = self.weights_per_device_bytes + (0 if hw.kind == "cpu" else self.activation_reserve_bytes)
        if self.kv_cache_bytes is not None:
            need += self.kv_cache_bytes / self.model_devices
        if need > self.usable_per_device_bytes:
            gib = 1024**3
            raise ConfigError(
                f"{self.name}: weights ({self.weights_per_device_bytes / gib:.1f} GiB/device) + reserve"
                f"{' + KV cache' if self.kv_cache_bytes else ''} need {need / gib:.1f} GiB per device; "
                f"{hw.name} offers {self.usable_per_device_bytes / gib:.1f} GiB",
                field="kv_cache_bytes" if self.kv_cache_bytes is not None else "tp",
                allowed="a larger tp/pp, a smaller precision or a device with more memory",
            )
        if self.kv_capacity_tokens < self.max_model_len:
            raise ConfigError(
                f"{self.name}: KV cache holds {self.kv_capacity_tokens} tokens, less than one "
                f"max_model_len={self.max_model_len} sequence", field="max_model_len",
                allowed=f"<= {self.kv_capacity_tokens}")


def catalogue(
    model: ModelArch | str,
    device_type: str,
    precisions: tuple[str, ...] = ("fp16", "fp8", "int8", "int4"),
    tps: tuple[int, ...] = (1, 2, 4, 8),
    **variant_kwargs: Any,
) -> list[Variant]:
    """Every valid variant of ``model`` on ``device_type`` over ``precisions`` x ``tps``.

    Invalid combinations (fp8 on A100, weights not fitting, TP not dividing heads) are skipped.
    Extra keyword arguments (``max_num_seqs``, ``max_model_len``...) go to every ``Variant``.

    Returns:
        Variants in (precision, tp) order.
    """
    arch = get_model(model) if isinstance(model, str) else model
    out: list[Variant] = []
    for prec in precisions:
        for tp in tps:
            try:
                out.append(Variant(model=arch, precision=prec, tp=tp, device_type=device_type, **variant_kwargs))
            except ConfigError:
                continue
    return out
