"""Test helpers shipped for users and for oserve's own tests.

* conformance checks to run on your own subclasses: :func:`check_planner`, :func:`check_forecaster`,
  :func:`check_forecast` (:mod:`oserve.testing.checks`) and :func:`check_backend` /
  :func:`acheck_backend` (:mod:`oserve.testing.backend_check`);
* :class:`FakeBackend` (a fake engine: deterministic tokens, no model) and its replicas;
* :class:`StackThread`: a serving stack on its own event loop, for synchronous tests;
* :func:`synthetic_table`: small profile tables;
* the pytest plugin :mod:`oserve.testing.pytest_plugin` (fixtures ``oserve_stack``, ``oserve_client``,
  ``oserve_sim``; see docs/testing.md), registered through the ``pytest11`` entry point.

Names are imported on first use, so loading the pytest plugin stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "check_planner", "check_forecaster", "check_forecast", "conformance_instances",
    "check_backend", "acheck_backend", "BackendCheckError",
    "FakeBackend", "FakeReplica", "FakeReplicaOptions", "StackThread", "synthetic_table", "serve_config",
    "SimulatedCluster", "simulated_cluster", "poisson_trace",
]

_LAZY = {
    "check_planner": "oserve.testing.checks",
    "check_forecaster": "oserve.testing.checks",
    "check_forecast": "oserve.testing.checks",
    "conformance_instances": "oserve.testing.checks",
    "check_backend": "oserve.testing.backend_check",
    "acheck_backend": "oserve.testing.backend_check",
    "BackendCheckError": "oserve.testing.backend_check",
    "FakeBackend": "oserve.testing.fake_backend",
    "FakeReplica": "oserve.testing.fake_backend",
    "FakeReplicaOptions": "oserve.testing.fake_backend",
    "StackThread": "oserve.testing.stack_thread",
    "synthetic_table": "oserve.testing.tables",
    "serve_config": "oserve.testing.pytest_plugin",
    "SimulatedCluster": "oserve.testing.pytest_plugin",
    "simulated_cluster": "oserve.testing.pytest_plugin",
    "poisson_trace": "oserve.testing.pytest_plugin",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'oserve.testing' has no attribute {name!r}")
