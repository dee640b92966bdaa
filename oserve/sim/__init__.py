"""The simulator: replay real traces on modelled clusters with the same control code.

Public API::

    from oserve.sim import Simulation, SimOptions, compare_fidelity
    res = Simulation(trace, table, cluster, initial_plan, controller=controller).run()

Modules: :mod:`~oserve.sim.replica` (one replica scheduled as vLLM v1), :mod:`~oserve.sim.engine`
(the entry point), :mod:`~oserve.sim.loop` and :mod:`~oserve.sim.events` (the event loop, events as
data), :mod:`~oserve.sim.backend` and :mod:`~oserve.sim.clock` (the simulated backend and clock
the real switcher runs on),
:mod:`~oserve.sim.policies` (oserve / static / best-static / plain-vllm), :mod:`~oserve.sim.metrics`,
:mod:`~oserve.sim.report` (files and plots),
:mod:`~oserve.sim.fidelity`, :mod:`~oserve.sim.capacity_check` and :mod:`~oserve.sim.scored_planner` (a planner that
scores candidate plans in simulation). Composition from a config: :func:`oserve.compose.simulate`. See docs/simulator.md.
"""

from __future__ import annotations

from oserve.sim.engine import SimOptions, SimResult, Simulation
from oserve.sim.metrics import compare_fidelity, summarise
from oserve.sim.replica import ReplicaParams, SimReplica
from oserve.sim.report import PolicyRun
from oserve.sim.request import SimRequest

__all__ = ["Simulation", "SimOptions", "SimResult", "SimReplica", "ReplicaParams", "SimRequest",
           "PolicyRun", "summarise", "compare_fidelity"]
