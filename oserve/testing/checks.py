"""Conformance checks for user implementations, in the spirit of scikit-learn's ``check_estimator``.

Run them in your own tests on your own subclasses; each raises ``AssertionError`` naming the
instance and the rule broken:

* :func:`check_planner` (a :class:`~oserve.policies.Planner`): fixed planning instances (a mix that
  needs two variants, a variant too big for any device, zero demand, unmet demand, a heterogeneous
  cluster, feasible demand, re-planning from a current plan);
* :func:`check_forecaster` (a factory of :class:`~oserve.forecast.Forecaster`): the fit/update/predict
  contract on awkward series; :func:`check_forecast` checks one forecast's arrays;
* ``check_backend`` (in :mod:`oserve.testing.backend_check`): the Backend/Replica contract.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from oserve.forecast.base import Forecast, Forecaster, ForecastInputError, NotFittedError
from oserve.policies import ClusterSpec, Demand, NodeSpec, Planner, check_plan, evaluate
from oserve.profiles.table import ProfileTable
from oserve.testing.tables import GIB, synthetic_table
from oserve.types import Plan

__all__ = ["check_planner", "conformance_instances", "check_forecaster", "check_forecast", "FEASIBLE_DEMAND"]

FEASIBLE_DEMAND = {"short": 4.0, "long": 0.5}
"""Demand of the ``feasible`` instance, req/s: one fp16-tp4 replica (capacity short 12, long 2 req/s,
planned at 70 %: 8.4 and 1.4) serves it with room to spare (0.5 / 1.4 + 4 / 8.4 = 0.83 of its time)."""


def conformance_instances() -> list[tuple[str, ClusterSpec, ProfileTable, Demand]]:
    """The fixed (name, cluster, table, demand) instances ``check_planner`` runs."""
    mix = synthetic_table({"int4-tp1": {"short": 8.0, "long": 0.1}, "fp16-tp4": {"short": 12.0, "long": 2.0},
                           "huge-tp2": {"short": 50.0, "long": 9.0}},
                          {"int4-tp1": 1, "fp16-tp4": 4, "huge-tp2": 2},
                          memory_per_device_bytes={"int4-tp1": 30 * GIB, "fp16-tp4": 70 * GIB, "huge-tp2": 200 * GIB},
                          class_names=["short", "long"])
    one = ClusterSpec.homogeneous(1, 8, "a100-80gb", 80 * GIB)
    hetero = ClusterSpec(nodes=[NodeSpec(name="a", device_type="a100-80gb", devices=8, device_memory_bytes=80 * GIB),
                                NodeSpec(name="b", device_type="a100-80gb", devices=4, device_memory_bytes=40 * GIB),
                                NodeSpec(name="c", device_type="a100-80gb", devices=2, device_memory_bytes=80 * GIB)])
    return [
        ("mix", one, mix, Demand(rates_rps={"short": 32.0, "long": 2.0})),
        ("zero-demand", one, mix, Demand(rates_rps={})),
        ("unmet", one, mix, Demand(rates_rps={"short": 300.0, "long": 30.0})),
        ("heterogeneous", hetero, mix, Demand(rates_rps={"short": 40.0, "long": 3.0})),
        ("feasible", one, mix, Demand(rates_rps=dict(FEASIBLE_DEMAND))),
    ]


def _check(label: str, plan: Plan, cluster: ClusterSpec, table: ProfileTable, demand: Demand,
           current: Plan | None, planner: Planner) -> None:
    problems = check_plan(plan, cluster, table)
    assert not problems, f"{label}: invalid plan: {problems}"
    score = evaluate(plan, cluster, table, demand, current, planner.weights)
    assert abs(score.objective - plan.objective) <= 1e-6 * max(1.0, abs(score.objective)), (
        f"{label}: plan.objective {plan.objective} != evaluate() {score.objective}")
    assert abs(score.goodput_rps - plan.predicted_goodput_rps) <= 1e-6 * max(1.0, score.goodput_rps), (
        f"{label}: predicted goodput disagrees with evaluate()")
    assert plan.memory_used_bytes == score.memory_used_bytes, f"{label}: memory_used_bytes disagrees"
    assert plan.reason, f"{label}: empty reason"


def check_planner(planner: Planner) -> None:
    """Run the conformance instances through ``planner``.

    Checks on every instance (also re-planned from the first plan as ``current``): the plan is valid
    (:func:`oserve.policies.check_plan`: device memory, devices per node, TP groups within a node,
    routing shares summing to 1), its reported objective, goodput and memory agree with
    :func:`oserve.policies.evaluate`, it explains itself (``reason``), and the same input gives the
    same plan. On the ``feasible`` instance (demand one replica can serve within SLO) the plan must
    serve all of it.

    Raises:
        AssertionError: a property does not hold (the message names the instance).
    """
    for name, cluster, table, demand in conformance_instances():
        plan = planner.plan(cluster, table, demand)
        _check(name, plan, cluster, table, demand, None, planner)
        if name == "feasible":
            total = sum(demand.rates_rps.values())
            assert plan.predicted_goodput_rps >= total * (1 - 1e-6), (
                f"{name}: the planner leaves feasible demand unserved: {plan.predicted_goodput_rps:.3f} of "
                f"{total:.3f} req/s within SLO (one fp16-tp4 replica serves it all); reason: {plan.reason}")
        again = planner.plan(cluster, table, demand)
        assert again == plan, f"{name}: same input gave a different plan"
        shifted = Demand(rates_rps={c: r * 1.5 + 0.5 for c, r in demand.rates_rps.items()} or {"long": 1.0})
        replanned = planner.plan(cluster, table, shifted, plan)
        _check(f"{name} (re-planned from current)", replanned, cluster, table, shifted, plan, planner)


# ---------------------------------------------------------------- forecasters

def check_forecast(fc: Forecast, k: int) -> None:
    """Assert ``fc`` has finite, non-negative arrays of shape ``(k,)`` with lower <= rates <= upper."""
    for name in ("rates_rps", "lower_rps", "upper_rps"):
        a = getattr(fc, name)
        assert isinstance(a, np.ndarray) and a.shape == (k,), f"{name} has shape {np.shape(a)}, expected ({k},)"
        assert np.all(np.isfinite(a)), f"{name} is not finite: {a}"
        assert np.all(a >= 0), f"{name} is negative: {a}"
    assert np.all(fc.lower_rps <= fc.rates_rps + 1e-9), f"lower {fc.lower_rps} above rates {fc.rates_rps}"
    assert np.all(fc.upper_rps >= fc.rates_rps - 1e-9), f"upper {fc.upper_rps} below rates {fc.rates_rps}"


def check_forecaster(factory: Callable[[], Forecaster], horizons_s: tuple[float, ...] = (10.0, 60.0)) -> None:
    """Check the Forecaster contract on a few awkward inputs.

    Checks: ``__init__`` learns nothing; predicting before fit raises :class:`NotFittedError`;
    ``fit``/``update`` return self; forecasts are finite, non-negative, ``(k,)``-shaped on a normal
    series, a constant series, a series with NaN/inf readings, an all-zero series and an empty
    history; a negative horizon raises :class:`ForecastInputError`; ``clone()`` is unfitted.
    """
    f = factory()
    assert not f.is_fitted, "a new forecaster must not be fitted"
    try:
        f.predict(10.0)
    except NotFittedError:
        pass
    else:
        raise AssertionError("predict before fit must raise NotFittedError")
    rng = np.random.default_rng(0)
    t = np.arange(40) * 10.0
    cases = {
        "normal": rng.poisson(30, size=(40, 2)) / 10.0,
        "constant": np.ones((40, 2)),
        "zeros": np.zeros((40, 2)),
        "non-finite": np.where(rng.random((40, 2)) < 0.2, np.nan, 3.0),
    }
    cases["non-finite"][5, 0] = np.inf
    cases["non-finite"][6, 1] = -np.inf
    for label, y in cases.items():
        g = factory()
        assert g.fit(t[:30], y[:30]) is g, "fit must return self"
        for h in horizons_s:
            check_forecast(g.predict(h), 2)
        assert g.update(t[30:], y[30:]) is g, "update must return self"
        for h in horizons_s:
            try:
                check_forecast(g.predict(h), 2)
            except AssertionError as exc:
                raise AssertionError(f"case {label!r}, horizon {h}: {exc}") from exc
    g = factory().fit(np.zeros(0), np.zeros((0, 3)))
    check_forecast(g.predict(60.0), 3)
    try:
        g.predict(-1.0)
    except ForecastInputError:
        pass
    else:
        raise AssertionError("a negative horizon must raise ForecastInputError")
    assert not g.clone().is_fitted, "clone() must return an unfitted forecaster"
