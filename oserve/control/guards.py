"""Safety rules the controller applies to a planner's plan before it is used. Pure: no clock, no I/O.

* :func:`missing_classes`: classes with demand that the profile table gives no capacity for (no
  variant has a row for the class, or every row says 0 req/s). A planner reads that as "nothing
  can serve it" and plans no replica for it, so with only such traffic it would stop every
  replica and every request would be refused. The controller raises an alarm (log warning, the
  decision's ``alarms``, a metric) and applies :func:`keep_running_capacity`.
* :func:`keep_running_capacity`: under such an alarm, a plan that removes running replicas is not
  applied; the current replicas stay (a plan that only adds replicas is applied).
* :func:`floor_replicas`: a plan with fewer than ``min_replicas`` replicas keeps enough of the
  current ones (fewest devices first), so a deployment at zero demand scales down to its minimum
  and the next request still finds a replica.
"""

from __future__ import annotations

from collections import Counter

from oserve.profiles.table import ProfileTable
from oserve.types import Demand, Plan, ReplicaPlacement

__all__ = ["missing_classes", "keep_running_capacity", "floor_replicas"]


def missing_classes(table: ProfileTable, demand: Demand) -> dict[str, str]:
    """Classes with demand > 0 that no variant of ``table`` has capacity for.

    Returns:
        ``class -> why`` (``"no row in the profile table"`` or ``"capacity 0 in every row"``), in
        the demand's order; empty when every loaded class has capacity somewhere.
    """
    out: dict[str, str] = {}
    for c, rate in demand.rates_rps.items():
        if not rate > 0:
            continue
        rows = [v.classes[c] for v in table.variants.values() if c in v.classes]
        if not rows:
            out[c] = "no row in the profile table"
        elif not any(r.capacity_rps > 0 for r in rows):
            out[c] = "capacity 0 in every row"
    return out


def _counts(plan: Plan | None) -> Counter[tuple[str, str]]:
    return Counter() if plan is None else Counter((r.variant, r.node) for r in plan.replicas)


def keep_running_capacity(plan: Plan, current: Plan | None, missing: dict[str, str]) -> Plan:
    """``plan``, or ``current`` when ``missing`` is non-empty and ``plan`` would remove a running replica.

    Returns:
        The plan to apply; when ``current`` is kept its ``reason`` says why.
    """
    if not missing or current is None or not (_counts(current) - _counts(plan)):
        return plan
    names = "; ".join(f"{c}: {why}" for c, why in missing.items())
    return current.model_copy(update={
        "reason": f"missing-class alarm ({names}): the plan would remove running replicas, current replicas kept"})


def floor_replicas(plan: Plan, current: Plan | None, table: ProfileTable, min_replicas: int) -> Plan:
    """``plan`` with current replicas added back until it has ``min_replicas`` replicas.

    Replicas of ``current`` not in ``plan`` are kept fewest devices first (then in ``current``'s
    order); every class is routed over the kept variants in proportion to their table capacity for
    it (equally where none has capacity). Without a current replica the plan is returned as is.
    """
    if len(plan.replicas) >= min_replicas or current is None:
        return plan
    left = _counts(current) - _counts(plan)
    extra: list[ReplicaPlacement] = []
    for r in sorted(current.replicas, key=lambda r: len(r.device_ids)):
        if len(plan.replicas) + len(extra) >= min_replicas:
            break
        if left[(r.variant, r.node)] > 0:
            left[(r.variant, r.node)] -= 1
            extra.append(r)
    if not extra:
        return plan
    replicas = [*plan.replicas, *extra]
    variants = sorted({r.variant for r in replicas})
    routing: dict[str, dict[str, float]] = {}
    for c in table.class_names:
        caps = {v: (table.variants[v].classes[c].capacity_rps if v in table.variants and c in table.variants[v].classes
                    else 0.0) for v in variants}
        total = sum(caps.values())
        routing[c] = ({v: x / total for v, x in caps.items() if x > 0} if total > 0
                      else {v: 1.0 / len(variants) for v in variants})
    kept = ", ".join(f"{r.variant} on {r.node}" for r in extra)
    return plan.model_copy(update={"replicas": replicas, "routing": routing, "admit_rps": {},
                                   "reason": f"{plan.reason}; min_replicas={min_replicas}: kept {kept}"})
