"""The Backend interface: how oserve starts, uses and stops replicas of an engine kind."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from oserve.errors import ReplicaError
from oserve.types import ClusterSpec

__all__ = [
    "ReplicaSpec",
    "SamplingParams",
    "TokenChunk",
    "ReplicaStats",
    "Replica",
    "Backend",
    "ReplicaState",
    "BackendLifecycle",
    "ClusterSource",
]

ReplicaState = Literal["starting", "ready", "draining", "stopped", "failed", "parked"]
"""``parked``: started and warm but taking no request until :meth:`Replica.wake` (see :meth:`Replica.park`)."""


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
        max_ongoing_requests: most requests the router sends the replica at once (Ray Serve's
            ``max_ongoing_requests``); more wait in the router-side queue. None: ``max_num_seqs``.
            Not an engine argument: backends ignore it.
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
    max_ongoing_requests: int | None = Field(
        None, ge=1, le=1024,
        description="most requests the router sends the replica at once (Ray Serve's max_ongoing_requests); "
        "None: max_num_seqs")


@dataclass(frozen=True)
class SamplingParams:
    """Sampling parameters of one request.

    The endpoint checks the engine-independent bounds (vLLM's, see
    :mod:`oserve.server.protocol`); :meth:`Replica.validate` checks them against the engine's own
    limits before the response starts.

    Attributes:
        max_tokens: output tokens at most (>= 1).
        temperature: in [0, 2]; 0 is greedy.
        top_p: in (0, 1].
        top_k: -1 or 0 (off), or >= 1.
        min_p: in [0, 1]; 0 is off.
        presence_penalty / frequency_penalty: in [-2, 2]; 0 is off.
        repetition_penalty: > 0; 1 is off.
        seed: random seed (64-bit signed) or None.
        stop: stop strings (none empty).
        ignore_eos: keep generating past end-of-sequence.
        n: choices per request (1).
        logit_bias: token id -> bias in [-100, 100], or None.
    """

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    seed: int | None = None
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False
    n: int = 1
    min_p: float = 0.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    logit_bias: Mapping[int, float] | None = None


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

    def validate(self, params: SamplingParams) -> None:
        """Check a request's sampling parameters against this engine's own limits.

        The endpoint calls it after routing and before the response starts, so a value the engine
        would refuse reaches the client as a 400 naming the parameter, never as a failed stream.
        The default accepts everything the endpoint's protocol checks accepted; backends whose
        engine has its own validator (vLLM's ``SamplingParams``) override it to run that validator.

        Raises:
            InvalidRequestError: a parameter the engine refuses (``param`` names it).
        """
        return  # noqa: B027 - optional hook: accepting everything is the documented default

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

    async def park(self) -> None:
        """Keep a drained replica started and warm but taking no request (state ``parked``).

        Called after :meth:`drain` (or right after the start, for a replica planned parked). On CPU
        the engine just idles: it holds its memory and, without requests, almost no CPU. A GPU
        backend may put the engine to sleep (vLLM sleep level 1: weights offloaded to host memory,
        KV cache freed). The default refuses: a backend that cannot park says so.

        Raises:
            ReplicaError: this backend cannot park replicas (the switcher then stops the replica).
        """
        raise ReplicaError(f"the backend of replica {self.replica_id} cannot park replicas",
                           replica_id=self.replica_id, code="park_unsupported")

    async def wake(self) -> None:
        """Make a parked replica take requests again (state ``ready``); the inverse of :meth:`park`.

        Raises:
            ReplicaError: the replica is not parked, or the engine failed to wake.
        """
        raise ReplicaError(f"the backend of replica {self.replica_id} cannot wake replicas",
                           replica_id=self.replica_id, code="park_unsupported")

    @abstractmethod
    def count_tokens(self, prompt: str | list[int]) -> int:
        """Prompt token count with this replica's tokenizer."""


class Backend(ABC):
    """An engine kind (vLLM, TensorRT-LLM, simulated). Starts replicas.

    Attributes:
        name: short name, as registered in :mod:`oserve.backends.registry`.
        needs_checkpoint: whether replicas load the configured model checkpoint; when False (fake
            and simulated backends) the stack neither builds the checkpoint nor loads its tokenizer.
    """

    name: str = "backend"
    needs_checkpoint: ClassVar[bool] = True

    @abstractmethod
    async def start_replica(self, spec: ReplicaSpec, replica_id: str) -> Replica:
        """Start a replica and return it when ready. Raises EngineStartError naming the cause."""


@runtime_checkable
class BackendLifecycle(Protocol):
    """An optional ability: a backend with its own connection to set up and tear down (e.g. joining
    a Ray cluster). The composition root calls :meth:`start` before the first replica starts and
    :meth:`close` after the last one stopped."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...


@runtime_checkable
class ClusterSource(Protocol):
    """An optional ability: a backend that discovers the nodes it places replicas on (e.g. the nodes
    of a Ray cluster), which may join or leave while it serves.

    The composition root calls :meth:`refresh_cluster` on a timer (in a worker thread: it may block
    on the network) and hands :attr:`cluster` to the orchestrator when it differs from the cluster
    the orchestrator plans on (``Orchestrator.update_cluster``).
    """

    @property
    def cluster(self) -> ClusterSpec:
        """The nodes seen at the last refresh."""
        ...

    def refresh_cluster(self) -> object:
        """Read the nodes now (blocking); replicas on nodes that left should report ``failed``.
        Returns a backend-specific report of what changed (callers read :attr:`cluster`)."""
        ...
