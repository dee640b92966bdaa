"""Mixing engines: one :class:`~oserve.backends.base.Backend` that starts each replica on its variant's engine.

A variant names its engine (:attr:`oserve.profiles.variants.Variant.engine`, default ``"vllm"``), so
one profile table and one plan can hold, say, ``llama-3-8b-fp8-tp1`` on vLLM and
``llama-3-8b-fp8-tp1-trtllm`` on TensorRT-LLM. The switcher, the orchestrator and the profiler
take one backend; :class:`EngineByVariant` is that backend, dispatching
:meth:`~oserve.backends.base.Backend.start_replica` by ``spec.variant``::

    backend = EngineByVariant({"vllm": VLLMBackend(), "process-vllm": ProcessBackend("vllm")},
                              engine_of={"fp32-s32": "vllm", "fp32-s32-process-vllm": "process-vllm"})
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from oserve.backends.base import Backend, Replica, ReplicaSpec
from oserve.errors import ConfigError

__all__ = ["EngineByVariant"]


class EngineByVariant(Backend):
    """Starts each replica on the backend named by its variant's engine.

    Args:
        backends: engine name -> backend.
        engine_of: variant name -> engine name; variants not listed use ``default``.
        default: the engine of unlisted variants.

    Raises:
        ConfigError: a listed variant names an engine with no backend (field
            ``variants.<name>.engine``, allowed: the engine names given); for an unlisted variant whose
            default engine has no backend, :meth:`start_replica` raises it.
    """

    name = "by-engine"

    def __init__(self, backends: Mapping[str, Backend], engine_of: Mapping[str, str] | None = None,
                 default: str = "vllm") -> None:
        self.backends = dict(backends)
        self.engine_of = dict(engine_of or {})
        self.default = default
        allowed = ", ".join(sorted(self.backends))
        for variant, engine in self.engine_of.items():
            if engine not in self.backends:
                raise ConfigError(f"variant {variant!r} runs on engine {engine!r}, which has no backend",
                                  field=f"variants.{variant}.engine", allowed=allowed)

    @classmethod
    def from_variants(cls, variants: Iterable[object], make_backend: Callable[[str], Backend],
                      default: str = "vllm") -> EngineByVariant:
        """Build one backend per engine the variants name.

        Args:
            variants: objects with ``name`` and ``engine`` (e.g. :class:`~oserve.profiles.variants.Variant`).
            make_backend: engine name -> a new backend (e.g. the backend registry's factory).
            default: engine of variants not listed.
        """
        engine_of = {v.name: v.engine for v in variants}  # type: ignore[attr-defined]
        names = sorted({*engine_of.values(), default})
        return cls({n: make_backend(n) for n in names}, engine_of, default)

    def backend_for(self, variant: str) -> Backend:
        """The backend that starts replicas of ``variant``."""
        engine = self.engine_of.get(variant, self.default)
        try:
            return self.backends[engine]
        except KeyError:
            raise ConfigError(f"variant {variant!r} runs on engine {engine!r}, which has no backend",
                              field=f"variants.{variant}.engine", allowed=", ".join(sorted(self.backends))) from None

    async def start_replica(self, spec: ReplicaSpec, replica_id: str) -> Replica:
        """Start the replica on its variant's backend (errors as that backend raises them)."""
        return await self.backend_for(spec.variant).start_replica(spec, replica_id)
