"""The control wing: decide (pure) and switch (effects), live and in the simulator.

One home per concept:

- :mod:`oserve.control.controller`: :class:`Controller`, the pure decision step (forecaster + planner),
  plan comparison (``plans_equal``, ``placement_counts``) and rate-history binning.
- :mod:`oserve.control.rules`: the pure switch rules (``plan_steps``, ``drain_blocker``,
  ``unneeded_starts``, ``effective_routing``, ``switch_status``, ``planning_base``).
- :mod:`oserve.control.resources`: :class:`ResourceModel`, memory and cores of a set of placements.
- :mod:`oserve.control.specs`: ``SpecFactory``, what to start for a placement.
- :mod:`oserve.control.switcher`: :class:`Switcher`, the async executor of transitions (one object
  for live and simulated runs; time only through its ``Clock``).
- :mod:`oserve.control.orchestrator`: :class:`Orchestrator`, the control loop and health checks.
- :mod:`oserve.control.metrics`: its Prometheus metrics.

Import from the submodules; this package module imports nothing, so importing the pure rules does
not pull in the executor or prometheus_client.
"""
