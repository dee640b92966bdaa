"""check_planner fails a planner that leaves feasible demand unserved."""

from __future__ import annotations

import numpy as np
import pytest

from oserve.policies import Allocation, Planner, Problem, make_planner
from oserve.testing import check_planner
from oserve.testing.checks import conformance_instances


class _IdlePlanner(Planner):
    """A deliberately broken planner (test fake): starts no replica whatever the demand."""

    name = "idle-test-fake"

    def _allocate(self, problem: Problem) -> Allocation:
        return Allocation(counts=np.zeros_like(problem.current), reason="starts nothing")


def test_check_planner_fails_a_planner_that_serves_nothing() -> None:
    with pytest.raises(AssertionError, match="feasible demand unserved"):
        check_planner(_IdlePlanner())


def test_the_feasible_instance_is_feasible() -> None:
    name, cluster, table, demand = next(i for i in conformance_instances() if i[0] == "feasible")
    plan = make_planner("milp").plan(cluster, table, demand)
    assert plan.slo_attainment == pytest.approx(1.0)
