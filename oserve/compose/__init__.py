"""The composition root: the one place that turns configs into running objects.

``oserve serve``, ``oserve simulate``, ``oserve plan``, ``oserve profile``, the demo and the pytest
plugin all build their components here:

* :mod:`oserve.compose.components`: backends, forecasters and planners from ``{kind, params}``
  through their registries; the model checkpoint and replica templates of a serve config;
* :mod:`oserve.compose.stack`: :func:`start_stack`, the serving stack of a serve config;
* :mod:`oserve.compose.simulation`: :func:`simulate`, policies replayed on a simulated cluster.

The simulator itself (:mod:`oserve.sim`) imports nothing from here, nor any HTTP code.
"""

from __future__ import annotations

from typing import Any

from oserve.compose.components import (
    backend_for_engine,
    build_backend,
    build_forecaster,
    build_planner,
    build_serve_backend,
    build_templates,
    resolve_model_path,
)

__all__ = ["build_backend", "build_serve_backend", "backend_for_engine", "build_forecaster", "build_planner", "build_templates", "resolve_model_path",
           "Stack", "start_stack", "free_port", "simulate", "SimulationRuns"]

_LAZY = {
    "Stack": "oserve.compose.stack", "start_stack": "oserve.compose.stack", "free_port": "oserve.compose.stack",
    "simulate": "oserve.compose.simulation", "SimulationRuns": "oserve.compose.simulation",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'oserve.compose' has no attribute {name!r}")
