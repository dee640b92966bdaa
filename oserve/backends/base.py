"""The Backend interface: how oserve starts, uses and stops replicas of an engine kind."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ReplicaSpec",
    "SamplingParams",
    "TokenChunk",
    "ReplicaStats",
    "Replica",
    "Backend",
    "ReplicaState",
]

ReplicaState = Literal["starting", "ready", "draining", "stopped", "failed"]


class ReplicaSpec(BaseModel):
    """What to start: one replica of a deployment variant.

    Attributes:
        variant: the variant's name (key into the profile table).
        model: path of a Hugging Face checkpoint folder (or a model name the backend resolves).
        served_model_name: the model name clients use.
        dtype: ``"bfloat16"``, ``"float16"``, ``"float32"`` or ``"auto"``.
        quantization: engine quantization method or None.
        tensor_parallel_size / pipeline_parallel_size: TP / PP degree.
        max_num_seqs: max concurrent sequences in a batch.
        max_model_len: max context length (prompt + output tokens).
        max_num_batched_tokens: token budget of one iteration (None: engine default).
        kv_cache_bytes: KV-cache memory to reserve, bytes (None: engine default).
        memory_utilization: fraction of device (CPU: NUMA node) memory the engine may reserve.
        cpu_cores: cores to pin the engine to (CPU backends), e.g. ``[0]``.
        devices: GPU ids (GPU backends).
        node: the cluster node the plan places the replica on (backends that span several nodes
            use it; a single-machine backend ignores it).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    variant: str
    model: str
    served_model_name: str
    dtype: str = "auto"
    quantization: str | None = None
    tensor_parallel_size: int = Field(1, ge=1)
    pipeline_parallel_size: int = Field(1, ge=1)
    max_num_seqs: int = Field(32, ge=1)
    max_model_len: int = Field(2048, ge=16)
    max_num_batched_tokens: int | None = Field(None, ge=16)
    kv_cache_bytes: int | None = Field(None, gt=0)
    memory_utilization: float | None = Field(
        None, gt=0, le=1,
        description="fraction of device memory (on CPU: of the NUMA node's memory) the engine may reserve; "
        "None: the backend's default")
    cpu_cores: tuple[int, ...] | None = None
    devices: tuple[int, ...] | None = None
    node: str | None = None
    enforce_eager: bool = True
    seed: int = 0


@dataclass(frozen=True)
class SamplingParams:
    """Sampling parameters of one request (validated by the endpoint before reaching here)."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    seed: int | None = None
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False
    n: int = 1


@dataclass(frozen=True)
class TokenChunk:
    """One streamed increment of a request's output.

    Attributes:
        text: new text since the previous chunk.
        token_ids: new token ids since the previous chunk.
        finished: True on the last chunk.
        finish_reason: ``"stop"``, ``"length"``, ``"abort"`` or None.
        prompt_tokens: prompt token count (set on every chunk).
        completion_tokens: output tokens so far.
    """

    text: str
    token_ids: tuple[int, ...]
    finished: bool
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int


@dataclass
class ReplicaStats:
    """Live stats of a replica; None means unknown (could not be read), never zero."""

    running: int | None = None
    waiting: int | None = None
    kv_cache_usage: float | None = None
    max_model_len: int | None = None
    extra: dict = field(default_factory=dict)


class Replica(ABC):
    """A handle on one running engine."""

    replica_id: str
    spec: ReplicaSpec

    @property
    @abstractmethod
    def state(self) -> ReplicaState: ...

    @abstractmethod
    def generate(self, request_id: str, prompt: str | list[int], params: SamplingParams) -> AsyncIterator[TokenChunk]:
        """Stream a request's output. Raises ReplicaError / RequestAbortedError on failure."""

    @abstractmethod
    async def abort(self, request_id: str) -> None:
        """Abort one request; its slot is freed. Unknown ids are ignored."""

    @abstractmethod
    async def stats(self) -> ReplicaStats:
        """Live stats (running, waiting, KV-cache usage, effective max context length)."""

    @abstractmethod
    async def health(self) -> bool:
        """True if the engine answers and is not dead."""

    @abstractmethod
    async def drain(self, timeout_s: float) -> int:
        """Stop taking new requests; wait for in-flight ones up to ``timeout_s``; abort the rest
        with an explicit error. Returns the number of requests aborted."""

    @abstractmethod
    async def stop(self) -> None:
        """Stop the engine and release its memory. Idempotent."""

    @abstractmethod
    def count_tokens(self, prompt: str | list[int]) -> int:
        """Prompt token count with this replica's tokenizer."""


class Backend(ABC):
    """An engine kind (vLLM, TensorRT-LLM, simulated). Starts replicas."""

    name: str = "backend"

    @abstractmethod
    async def start_replica(self, spec: ReplicaSpec, replica_id: str) -> Replica:
        """Start a replica and return it when ready. Raises EngineStartError naming the cause."""
