"""Engine backends. ``VLLMBackend`` is imported lazily so ``import oserve.backends`` stays light."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from oserve.backends.base import Backend, Replica, ReplicaSpec, ReplicaStats, SamplingParams, TokenChunk

if TYPE_CHECKING:
    from oserve.backends.vllm import VLLMBackend

__all__ = ["Backend", "Replica", "ReplicaSpec", "ReplicaStats", "SamplingParams", "TokenChunk", "VLLMBackend"]


def __getattr__(name: str) -> Any:
    if name == "VLLMBackend":
        from oserve.backends.vllm import VLLMBackend

        return VLLMBackend
    raise AttributeError(f"module 'oserve.backends' has no attribute {name!r}")
