"""oserve: serve LLMs faster by orchestrating heterogeneous deployments and switching them live.

The stable public surface is :data:`__all__`; everything else may move. Names are imported on first
use, so ``import oserve`` stays light (no vLLM, cvxpy or FastAPI until asked for)::

    import oserve
    config = oserve.load_config("examples/cpu-smollm2.yaml")
    stack = await oserve.start_stack(config)          # OpenAI endpoint on stack.url
    runs = oserve.simulate("examples/sim-4x8-a100.yaml", ["oserve", "best-static"])

Extension points (subclass, then register by name; see docs/):
:class:`Planner` (``register_planner``), :class:`Forecaster` (``register_forecaster``),
:class:`Backend` (``register_backend``); or the entry-point groups ``oserve.planners``,
``oserve.forecasters`` and ``oserve.backends``.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY: dict[str, tuple[str, str]] = {
    # value types
    "ClusterSpec": ("oserve.types", "ClusterSpec"),
    "NodeSpec": ("oserve.types", "NodeSpec"),
    "Demand": ("oserve.types", "Demand"),
    "Plan": ("oserve.types", "Plan"),
    "ReplicaPlacement": ("oserve.types", "ReplicaPlacement"),
    "SLO": ("oserve.types", "SLO"),
    "PlanScore": ("oserve.types", "PlanScore"),
    "ClassScheme": ("oserve.types", "ClassScheme"),
    "ProfileTable": ("oserve.profiles.table", "ProfileTable"),
    # extension points and their registries
    "Backend": ("oserve.backends.base", "Backend"),
    "Replica": ("oserve.backends.base", "Replica"),
    "ReplicaSpec": ("oserve.backends.base", "ReplicaSpec"),
    "ReplicaState": ("oserve.backends.base", "ReplicaState"),
    "ReplicaStats": ("oserve.backends.base", "ReplicaStats"),
    "SamplingParams": ("oserve.backends.base", "SamplingParams"),
    "TokenChunk": ("oserve.backends.base", "TokenChunk"),
    "register_backend": ("oserve.backends.registry", "register_backend"),
    "make_backend": ("oserve.backends.registry", "make_backend"),
    "Forecaster": ("oserve.forecast.base", "Forecaster"),
    "Forecast": ("oserve.forecast.base", "Forecast"),
    "register_forecaster": ("oserve.forecast.registry", "register"),
    "make_forecaster": ("oserve.forecast.registry", "make"),
    "Planner": ("oserve.policies.base", "Planner"),
    "Allocation": ("oserve.policies.base", "Allocation"),
    "Problem": ("oserve.policies.problem", "Problem"),
    "ObjectiveWeights": ("oserve.policies.problem", "ObjectiveWeights"),
    "register_planner": ("oserve.policies.base", "register_planner"),
    "make_planner": ("oserve.policies.base", "make_planner"),
    "evaluate": ("oserve.policies.evaluate", "evaluate"),
    # running things
    "Orchestrator": ("oserve.control.orchestrator", "Orchestrator"),
    "ServeConfig": ("oserve.config", "ServeConfig"),
    "load_config": ("oserve.config", "load_config"),
    "SimConfig": ("oserve.sim.config", "SimConfig"),
    "Stack": ("oserve.compose.stack", "Stack"),
    "start_stack": ("oserve.compose.stack", "start_stack"),
    "simulate": ("oserve.compose.simulation", "simulate"),
    # errors
    "OserveError": ("oserve.errors", "OserveError"),
    "ConfigError": ("oserve.errors", "ConfigError"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'oserve' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
