"""Parked (warm) replicas: which replicas to keep started but idle, and what activating one costs.

A parked replica is started and warm but receives no traffic (:attr:`oserve.types.Plan.parked`).
On CPU an idle engine holds its memory and almost no CPU, so several variants can be parked on the
cores an active replica uses; on GPUs vLLM's sleep mode (level 1: weights offloaded to host memory,
KV cache freed) plays the same role. Activating a parked replica is a wake plus a routing shift
(seconds), not a cold engine start (tens of seconds on CPU, minutes on GPU).

* :func:`park_plan` (pure): adds parked replicas to a plan so that each variant of ``keep_warm``
  has that many replicas started (active + parked), where memory allows. Parked replicas go first
  where one of that variant is parked or active now (sticky: a deactivated replica parks in place),
  then next to an active replica of another variant of the same width (on CPU they share its cores),
  then on any other devices of the variant's device type.
* :func:`wake_table` (pure): the profile table with each warm variant of the current plan (parked,
  or active and kept warm) costing its wake time instead of its cold-start time, so that a
  planner's switch cost of activating a parked replica, or of parking an active one, is the wake time.
* :class:`ParkingPlanner`: wraps any planner; plans on :func:`wake_table`, then :func:`park_plan`.

Configured by ``orchestrator.parking`` (:class:`oserve.config.ParkingConfig`).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from oserve.errors import ConfigError
from oserve.profiles.table import ProfileTable
from oserve.types import ClusterSpec, Demand, Plan, ReplicaPlacement

__all__ = ["DEFAULT_WAKE_S", "wake_time_of", "wake_table", "park_plan", "ParkingPlanner"]

#: Wake time assumed for a variant whose profile has no ``wake_time_s`` and that the config does not
#: name, s. An estimate: on CPU a parked engine takes requests at once (the time is the routing
#: shift); vLLM's sleep level 1 wake-up on GPU takes of the order of a second for small models
#: (weights copied back from host memory). Measure with bench/park_switch.py.
DEFAULT_WAKE_S = 1.0


def _check(keep_warm: Mapping[str, int], wake_time_s: Mapping[str, float], table: ProfileTable,
           field: str = "orchestrator.parking") -> None:
    """Raise ConfigError naming ``<field>.<key>.<variant>`` for an unknown variant or a value that is
    negative or not finite (``field``: where the parking config sits, ``orchestrator.parking`` in a
    serve config, ``control.parking`` in a simulate config)."""
    for name, src in (("keep_warm", keep_warm), ("wake_time_s", wake_time_s)):
        for v, x in src.items():
            if v not in table.variants:
                raise ConfigError(f"{field}.{name} names unknown variant {v!r}",
                                  field=f"{field}.{name}.{v}", allowed=", ".join(sorted(table.variants)))
            if not (x >= 0 and math.isfinite(x)):
                raise ConfigError(f"{field}.{name}.{v} must be a finite number >= 0, got {x}",
                                  field=f"{field}.{name}.{v}", allowed="a finite number >= 0")


def wake_time_of(variant: str, table: ProfileTable, wake_time_s: Mapping[str, float] | None = None) -> float:
    """Decision-to-serving time of a parked replica of ``variant``, s: the config's value, else the
    profile's ``wake_time_s``, else :data:`DEFAULT_WAKE_S`."""
    if wake_time_s and variant in wake_time_s:
        return float(wake_time_s[variant])
    w = table.variants[variant].wake_time_s
    return DEFAULT_WAKE_S if w is None else float(w)


def wake_table(table: ProfileTable, current: Plan | None, wake_time_s: Mapping[str, float] | None = None,
               keep_warm: Iterable[str] = ()) -> ProfileTable:
    """``table`` where each warm variant of ``current`` has ``start_time_s`` = its wake time.

    Warm: parked in ``current``, or active in ``current`` and kept warm (``keep_warm``: removing
    one parks it instead of stopping it). Planners charge ``start_time_s`` per replica started or
    stopped; with this table, activating a parked replica, or deactivating one that will park,
    costs the wake time. Per variant (not per replica): a plan that activates more replicas of a
    warm variant than are parked is charged the wake time for the extra ones too (optimistic).
    Returns ``table`` itself when no variant is warm.
    """
    kept = set(keep_warm)
    warm = set() if current is None else (
        {p.variant for p in current.parked} | {p.variant for p in current.replicas if p.variant in kept})
    warm &= set(table.variants)
    if not warm:
        return table
    variants = {name: (vp.model_copy(update={"start_time_s": min(vp.start_time_s, wake_time_of(name, table, wake_time_s))})
                       if name in warm else vp) for name, vp in table.variants.items()}
    return table.model_copy(update={"variants": variants})


class _Memory:
    """Memory held per node (CPU: one pool per node) or per device (GPU), bytes; parked replicas hold
    their memory on CPU and none on GPU (asleep), as :class:`oserve.control.resources.ResourceModel`
    accounts them."""

    def __init__(self, cluster: ClusterSpec, table: ProfileTable) -> None:
        self.cluster, self.table = cluster, table
        self.nodes = {n.name: n for n in cluster.nodes}
        self.used: Counter[tuple[str, int | None]] = Counter()

    def _need(self, p: ReplicaPlacement, parked: bool) -> dict[tuple[str, int | None], int]:
        node, vp = self.nodes[p.node], self.table.variants[p.variant]
        if node.device_type.lower() == "cpu":
            return {(p.node, None): vp.memory_per_device_bytes * max(vp.devices_per_replica, len(p.device_ids), 1)}
        return {} if parked else {(p.node, d): vp.memory_per_device_bytes for d in p.device_ids}

    def _cap(self, key: tuple[str, int | None]) -> int:
        node = self.nodes[key[0]]
        return node.device_memory_bytes * (node.devices if key[1] is None else 1)

    def add(self, p: ReplicaPlacement, parked: bool, *, force: bool = False) -> bool:
        """Hold ``p``'s memory if it fits (or always, with ``force``); returns whether it did."""
        need = self._need(p, parked)
        if not force and any(self.used[k] + b > self._cap(k) for k, b in need.items()):
            return False
        self.used.update(need)
        return True


def _groups(cluster: ClusterSpec, table: ProfileTable, variant: str) -> list[ReplicaPlacement]:
    """Every contiguous device group on the nodes of ``variant``'s device type (node order, then ids)."""
    vp = table.variants[variant]
    out = []
    for node in cluster.nodes:
        if node.device_type.lower() != vp.device_type.lower():
            continue
        w = vp.devices_per_replica
        out += [ReplicaPlacement(variant=variant, node=node.name, device_ids=tuple(range(d, d + w)))
                for d in range(0, node.devices - w + 1, w)]
    return out


def park_plan(plan: Plan, keep_warm: Mapping[str, int], cluster: ClusterSpec, table: ProfileTable,
              previous: Plan | None = None, *, field: str = "orchestrator.parking") -> Plan:
    """``plan`` with parked replicas added so that each variant of ``keep_warm`` has that many started.

    Args:
        plan: the planner's plan (its ``replicas`` are the active ones; its ``parked`` are replaced).
        keep_warm: per variant, replicas to keep started (active + parked) over the cluster.
        cluster / table: memory accounting; parked replicas must fit beside the active ones (on CPU
            they hold memory, on GPU no device memory), else fewer are parked.
        previous: the plan in force now; its parked and active replicas of a variant are where that
            variant parks first.
        field: where the parking config sits, for error messages (``control.parking`` in a
            simulate config).

    Returns:
        The plan with ``parked`` set (and a note in ``reason``).

    Raises:
        ConfigError: ``keep_warm`` names an unknown variant or a negative count.
    """
    _check(keep_warm, {}, table, field)
    mem = _Memory(cluster, table)
    for p in plan.replicas:
        if p.node in mem.nodes and p.variant in table.variants:
            mem.add(p, parked=False, force=True)
    active = Counter(p.variant for p in plan.replicas)
    parked: list[ReplicaPlacement] = []
    short: list[str] = []
    for variant in sorted(keep_warm):
        want = int(keep_warm[variant]) - active[variant]
        if want <= 0:
            continue
        prev = [] if previous is None else [p for p in [*previous.parked, *previous.replicas] if p.variant == variant]
        beside = [p.model_copy(update={"variant": variant}) for p in plan.replicas if p.variant != variant
                  and len(p.device_ids) == table.variants[variant].devices_per_replica]
        taken = {(p.node, p.device_ids) for p in plan.replicas if p.variant == variant}
        for cand in [*prev, *beside, *_groups(cluster, table, variant)]:
            if want == 0:
                break
            key = (cand.node, cand.device_ids)
            if key in taken or cand.node not in mem.nodes:
                continue
            if mem.add(cand, parked=True):
                parked.append(cand)
                taken.add(key)
                want -= 1
        if want > 0:
            short.append(f"{variant} ({want} short: memory)")
    note = f"{len(parked)} parked (keep_warm)" + (f", not parked: {', '.join(short)}" if short else "")
    return plan.model_copy(update={"parked": parked, "reason": f"{plan.reason}; {note}" if plan.reason else note})


class ParkingPlanner:
    """Wrap a planner so that its plans keep parked replicas (see the module docstring).

    Args:
        inner: the planner deciding the active replicas and the routing.
        keep_warm: per variant, replicas to keep started (active + parked), >= 0.
        wake_time_s: per variant, decision-to-serving time of a parked replica, s (>= 0); variants not
            named use the profile's ``wake_time_s`` or :data:`DEFAULT_WAKE_S`.
        field: where the parking config sits, for error messages (``orchestrator.parking`` in a serve
            config, ``control.parking`` in a simulate config).

    Raises (from :meth:`plan`):
        ConfigError: a variant the table lacks, or a negative count or time.
    """

    def __init__(self, inner: Any, keep_warm: Mapping[str, int], wake_time_s: Mapping[str, float] | None = None,
                 *, field: str = "orchestrator.parking") -> None:
        self.inner = inner
        self.field = field
        self.keep_warm = {str(k): int(v) for k, v in keep_warm.items()}
        self.wake_time_s = {str(k): float(v) for k, v in (wake_time_s or {}).items()}
        self.name = f"{getattr(inner, 'name', 'planner')}+parking"

    def plan(self, cluster: ClusterSpec, table: ProfileTable, demand: Demand, current: Plan | None) -> Plan:
        """The inner planner's plan on :func:`wake_table`, with parked replicas (:func:`park_plan`)."""
        _check(self.keep_warm, self.wake_time_s, table, self.field)
        cheap = wake_table(table, current, self.wake_time_s, (v for v, n in self.keep_warm.items() if n > 0))
        inner = self.inner.plan(cluster, cheap, demand, current)
        return park_plan(inner, self.keep_warm, cluster, table, current, field=self.field)
