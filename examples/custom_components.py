"""A planner, a forecaster and a backend written as subclasses, registered by name (docs/*.md).

``examples/test_custom_components.py`` checks them with oserve's conformance checks and runs them
from YAML through ``oserve simulate`` and a serving stack. In your own package, publish them as entry
points (``oserve.planners``, ``oserve.forecasters``, ``oserve.backends``) instead of calling
:func:`register`, so that ``oserve serve`` / ``oserve simulate`` find them in a fresh process.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np

from oserve import (
    Allocation,
    Backend,
    Forecaster,
    Planner,
    Problem,
    Replica,
    ReplicaSpec,
    ReplicaState,
    ReplicaStats,
    SamplingParams,
    TokenChunk,
    register_backend,
    register_forecaster,
    register_planner,
)
from oserve.errors import RequestAbortedError


class MostCapacityPlanner(Planner):
    """Fills every node group with the variant of the highest planning capacity for the demand mix.

    Only :meth:`_allocate` is written: :meth:`Planner.plan` places replicas on devices, derives
    routing weights and scores the plan with the same objective as every built-in planner.
    """

    def _allocate(self, problem: Problem) -> Allocation:
        counts = np.zeros_like(problem.current)
        mix = problem.demand / problem.demand.sum() if problem.demand.sum() > 0 else np.ones(len(problem.classes))
        per_replica = (problem.cap * mix[None, :]).sum(axis=1) / problem.dev  # req/s per device, (V,)
        for g, group in enumerate(problem.groups):
            fitting = [v for v in range(len(problem.variants)) if problem.fits[v, g]]
            if fitting:
                best = max(fitting, key=lambda v: (per_replica[v], -v))
                counts[best, g] = group.devices // int(problem.dev[best])
        return Allocation(counts=counts, reason="most capacity per device for the demand mix")


class MeanOfLastForecaster(Forecaster):
    """Forecasts the mean of the last ``window`` readings of each class (req/s).

    Args:
        window: readings averaged (>= 1).
    """

    def __init__(self, window: int = 5) -> None:
        self.window = window

    def _fit(self) -> None:
        pass

    def _update(self, t_new: np.ndarray, y_new: np.ndarray) -> None:
        pass

    def _predict(self, steps: int, horizon_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        recent = self.history_filled()[-int(self.window):]
        point = recent.mean(axis=0) if len(recent) else np.zeros(self.history_.k)
        lower, upper = self._band(point, steps)
        return point, lower, upper


class EchoReplica(Replica):
    """Echoes the prompt's words back, one token per word, up to ``max_tokens``."""

    def __init__(self, spec: ReplicaSpec, replica_id: str) -> None:
        self.spec, self.replica_id = spec, replica_id
        self._state: ReplicaState = "ready"
        self._running: set[str] = set()

    @property
    def state(self) -> ReplicaState:
        return self._state

    def count_tokens(self, prompt: str | list[int]) -> int:
        return len(prompt) if isinstance(prompt, list) else len(prompt.split())

    def generate(self, request_id: str, prompt: str | list[int], params: SamplingParams) -> AsyncIterator[TokenChunk]:
        return self._generate(request_id, prompt, params)

    async def _generate(self, request_id: str, prompt: str | list[int], params: SamplingParams
                        ) -> AsyncIterator[TokenChunk]:
        if self._state != "ready":
            raise RequestAbortedError(f"replica {self.replica_id} is {self._state}")
        words = prompt.split() if isinstance(prompt, str) else [str(t) for t in prompt]
        out = words[:params.max_tokens] or ["echo"]
        self._running.add(request_id)
        try:
            for i, w in enumerate(out):
                await asyncio.sleep(0)
                if request_id not in self._running:
                    yield TokenChunk("", (), True, "abort", len(words), i)
                    return
                last = i == len(out) - 1
                reason = ("length" if len(out) == params.max_tokens else "stop") if last else None
                yield TokenChunk(f" {w}", (i,), last, reason, len(words), i + 1)
        finally:
            self._running.discard(request_id)

    async def abort(self, request_id: str) -> None:
        self._running.discard(request_id)

    async def stats(self) -> ReplicaStats:
        return ReplicaStats(running=len(self._running), waiting=0, max_model_len=self.spec.max_model_len)

    async def health(self) -> bool:
        return self._state == "ready"

    async def drain(self, timeout_s: float) -> int:
        self._state = "draining"
        aborted = len(self._running)
        self._running.clear()
        return aborted

    async def stop(self) -> None:
        self._state = "stopped"
        self._running.clear()


class EchoBackend(Backend):
    """Starts :class:`EchoReplica` objects; loads no checkpoint."""

    needs_checkpoint = False

    async def start_replica(self, spec: ReplicaSpec, replica_id: str) -> EchoReplica:
        return EchoReplica(spec, replica_id)


def register() -> None:
    """Register the three under the names the YAML files use (once per process)."""
    register_planner("most-capacity", MostCapacityPlanner)
    register_forecaster("mean-of-last", MeanOfLastForecaster)
    register_backend("echo", EchoBackend)
