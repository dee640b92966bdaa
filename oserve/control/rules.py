"""The pure switch rules, shared by every run of the :class:`~oserve.control.switcher.Switcher`.

Nothing here reads a clock or does I/O; each function takes values and returns values:

* :func:`plan_steps` diffs the real replicas against a target :class:`~oserve.types.Plan`
  and orders the work into phases. Each phase first starts replicas (concurrently), then shifts
  routing, then drains and stops replicas. Where the memory of the nodes allows, every new replica
  starts in the first phase while the old ones keep serving (make-before-break). Where it does not,
  old replicas are drained one per phase (rolling), preferring one whose removal leaves every request
  class some capacity; only when no such order exists is a class left without capacity for a moment
  (reported in :attr:`SwitchSteps.capacity_gap_classes`).
* :func:`drain_blocker`: a planned drain is skipped when it would leave a class without capacity.
* :func:`rollback_starts`: after a phase's starts failed, the drained replicas to start again so
  that every class they served has capacity again.
* :func:`backed_off_starts`: the replicas a plan would start of a variant whose start failed recently.
* :func:`unneeded_starts`: when a newer target arrives mid-transition, the starts it does not need.
* :func:`effective_routing`: the target routing restricted to variants with a ready replica.
* :func:`switch_status`: the outcome of a transition.
* :func:`planning_base`: which plan the controller compares a new decision with.
* :func:`relocate_plan`: a plan after nodes left the cluster: the replicas on nodes that are gone
  move to the remaining nodes where memory allows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from oserve.backends.base import ReplicaState
from oserve.control.controller import placement_counts
from oserve.control.resources import ResourceModel
from oserve.profiles.table import ProfileTable
from oserve.types import Plan, ReplicaPlacement

__all__ = [
    "LiveReplica",
    "Phase",
    "SwitchSteps",
    "SwitchStatus",
    "plan_steps",
    "covered_classes",
    "effective_routing",
    "drain_blocker",
    "unneeded_starts",
    "rollback_starts",
    "backed_off_starts",
    "switch_status",
    "planning_base",
    "Relocation",
    "relocate_plan",
]

SwitchStatus = Literal["applied", "unchanged", "partial", "failed", "superseded"]

@dataclass(frozen=True)
class LiveReplica:
    """A replica as the step planner sees it."""

    replica_id: str
    placement: ReplicaPlacement
    state: ReplicaState


@dataclass(frozen=True)
class Phase:
    """One phase of a transition: start and wake replicas, shift routing, then drain and stop (or park)
    replicas.

    Attributes:
        starts: placements to start concurrently (devices chosen).
        drains: replica ids to drain and stop concurrently after the starts are ready.
        forced: True when a drain leaves some class without capacity (no other order existed).
        wakes: parked replica ids to wake (activation: wake, then routing shift), with the starts.
        parks: replica ids to drain and park (deactivation: routing removal, drain, park), with the drains.
        park_starts: placements to start, warm up and park at once (planned parked), with the starts.
    """

    starts: tuple[ReplicaPlacement, ...] = ()
    drains: tuple[str, ...] = ()
    forced: bool = False
    wakes: tuple[str, ...] = ()
    parks: tuple[str, ...] = ()
    park_starts: tuple[ReplicaPlacement, ...] = ()


@dataclass(frozen=True)
class SwitchSteps:
    """The ordered work of one transition (output of :func:`plan_steps`).

    Attributes:
        keep: replica ids that stay (active or parked).
        cleanup: replica ids in a failed or stopped state, and parked replicas the target does not
            keep, to stop first (they serve nothing).
        starts: every placement to start, with the devices chosen (those to park included).
        stops: every running replica id to drain and stop.
        phases: the order of the work.
        unplaceable: target placements that cannot fit even after every planned stop.
        make_before_break: True when all starts and wakes come before any drain.
        capacity_gap_classes: classes left without capacity between two phases (unavoidable).
        wakes: parked replica ids to wake (activated without a cold start).
        parks: active replica ids to drain and park.
    """

    keep: tuple[str, ...]
    cleanup: tuple[str, ...]
    starts: tuple[ReplicaPlacement, ...]
    stops: tuple[str, ...]
    phases: tuple[Phase, ...]
    unplaceable: tuple[ReplicaPlacement, ...] = ()
    make_before_break: bool = True
    capacity_gap_classes: tuple[str, ...] = ()
    wakes: tuple[str, ...] = ()
    parks: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        """True when nothing has to start, stop, wake or park."""
        return not (self.starts or self.stops or self.cleanup or self.wakes or self.parks)


def covered_classes(variants: Iterable[str], table: ProfileTable) -> set[str]:
    """Classes that at least one of ``variants`` serves (capacity > 0 in the table)."""
    out: set[str] = set()
    for v in variants:
        vp = table.variants.get(v)
        if vp is not None:
            out.update(c for c, cp in vp.classes.items() if cp.capacity_rps > 0)
    return out


def effective_routing(target: dict[str, dict[str, float]], ready_variants: Iterable[str],
                      previous: dict[str, dict[str, float]] | None = None) -> dict[str, dict[str, float]]:
    """Routing weights restricted to variants with a ready replica, renormalised per class.

    For a class whose target variants have no ready replica yet, the previous weights (restricted
    the same way) are kept; a class with neither is left out (the router then falls back to any
    ready replica that fits, and counts it).
    """
    ready = set(ready_variants)
    out: dict[str, dict[str, float]] = {}
    for cls in sorted(set(target) | set(previous or {})):
        for source in (target.get(cls, {}), (previous or {}).get(cls, {})):
            ws = {v: float(w) for v, w in source.items() if v in ready and w > 0}
            total = sum(ws.values())
            if total > 0:
                out[cls] = {v: w / total for v, w in sorted(ws.items())}
                break
    return out


def _choose_devices(hint: ReplicaPlacement, final_taken: set[tuple[str, int]], live: list[ReplicaPlacement],
                    res: ResourceModel) -> ReplicaPlacement:
    """Pick devices for a new replica: free in the final layout, and fitting now if possible."""
    node = next(n for n in res.cluster.nodes if n.name == hint.node)
    width = max(len(hint.device_ids), res.table.variants[hint.variant].devices_per_replica, 1)
    free_final = [d for d in range(node.devices) if (hint.node, d) not in final_taken]

    def mk(ids: Sequence[int]) -> ReplicaPlacement:
        return ReplicaPlacement(variant=hint.variant, node=hint.node, device_ids=tuple(sorted(ids)))

    hint_free = all((hint.node, d) not in final_taken for d in hint.device_ids) and len(hint.device_ids) == width
    if hint_free and res.fits(live, hint):
        return hint
    if len(free_final) >= width:
        used = res.usage(live)
        # least-used devices first; ties by id (deterministic)
        order = sorted(free_final, key=lambda d: (used[(hint.node, None if res.pooled(hint.node) else d)], d))
        cand = mk(order[:width])
        if res.fits(live, cand) or not hint_free:
            return cand
    return hint


def plan_steps(live: Sequence[LiveReplica], target: Plan, resources: ResourceModel, table: ProfileTable) -> SwitchSteps:
    """Diff the real replicas against ``target`` and order the work.

    Replicas are matched per ``(variant, node)``. For the target's active replicas, running ones
    are kept first (the ones whose devices the target names first, then by id), then parked ones
    are woken, and only the rest start cold. For the target's parked replicas, parked ones are
    kept, then surplus running ones are parked (drained, then parked), then new ones start and
    park at once. The other running replicas stop; the other parked ones stop first (cleanup).
    Starts go on devices that are free in the final layout (the target's if possible).

    Args:
        live: the replicas that exist now (ready ones serve; failed/stopped ones are cleaned up).
        target: the plan to reach.
        resources: memory accounting.
        table: the profile table (which classes each variant serves).

    Returns:
        The steps; see :class:`SwitchSteps`.

    Raises:
        ConfigError: the target places a replica on an unknown node/device or of an unknown variant.
    """
    for p in [*target.replicas, *target.parked]:
        resources.check(p)
    serving = [r for r in live if r.state in ("ready", "starting")]
    parked_now = [r for r in live if r.state == "parked"]
    cleanup = [r.replica_id for r in live if r.state not in ("ready", "starting", "draining", "parked")]
    draining = [r for r in live if r.state == "draining"]

    def by_key(items: Iterable[ReplicaPlacement]) -> dict[tuple[str, str], list[ReplicaPlacement]]:
        out: dict[tuple[str, str], list[ReplicaPlacement]] = {}
        for p in items:
            out.setdefault((p.variant, p.node), []).append(p)
        return out

    def live_by_key(items: Iterable[LiveReplica]) -> dict[tuple[str, str], list[LiveReplica]]:
        out: dict[tuple[str, str], list[LiveReplica]] = {}
        for r in sorted(items, key=lambda r: r.replica_id):
            out.setdefault((r.placement.variant, r.placement.node), []).append(r)
        return out

    tgt_by_key, tgtp_by_key = by_key(target.replicas), by_key(target.parked)
    cur_by_key, curp_by_key = live_by_key(serving), live_by_key(parked_now)

    keep: list[LiveReplica] = []
    stops: list[LiveReplica] = []
    wakes: list[LiveReplica] = []
    parks: list[LiveReplica] = []
    park_keep: list[LiveReplica] = []
    hints: list[ReplicaPlacement] = []
    park_hints: list[ReplicaPlacement] = []
    for key in sorted(set(tgt_by_key) | set(cur_by_key) | set(tgtp_by_key) | set(curp_by_key)):
        wanted, wanted_p = list(tgt_by_key.get(key, [])), list(tgtp_by_key.get(key, []))
        target_devs = [p.device_ids for p in wanted]
        order = lambda r, devs=target_devs: (r.placement.device_ids not in devs, r.replica_id)  # noqa: E731
        cur = sorted(cur_by_key.get(key, []), key=order)
        curp = sorted(curp_by_key.get(key, []), key=order)
        n, m = len(wanted), len(wanted_p)
        kept = cur[:n]
        woken = curp[: n - len(kept)]
        rest_p = curp[len(woken):]
        kept_p = rest_p[:m]
        to_park = cur[n:][: m - len(kept_p)]
        keep += kept
        wakes += woken
        park_keep += kept_p
        parks += to_park
        stops += cur[n + len(to_park):]
        cleanup += [r.replica_id for r in rest_p[m:]]
        for r in kept + woken:  # the target placements not matched by an active replica's devices are start hints
            if r.placement.device_ids in [p.device_ids for p in wanted]:
                wanted.remove(next(p for p in wanted if p.device_ids == r.placement.device_ids))
        hints += wanted[: max(0, n - len(kept) - len(woken))]
        park_hints += wanted_p[: max(0, m - len(kept_p) - len(to_park))]

    final_taken = {(r.placement.node, d) for r in keep + wakes for d in r.placement.device_ids}
    live_mem = [r.placement for r in keep + stops + parks + draining]
    pmem = [r.placement for r in park_keep + wakes]
    starts: list[ReplicaPlacement] = []
    for h in hints:
        p = _choose_devices(h, final_taken, live_mem + starts, resources)
        starts.append(p)
        final_taken.update((p.node, d) for d in p.device_ids)

    protected = covered_classes((r.placement.variant for r in serving), table) & covered_classes(
        (p.variant for p in target.replicas), table)

    phases: list[Phase] = []
    # pending work: (kind, placement, replica id); wakes first, then cold starts, then starts to park
    pending: list[tuple[str, ReplicaPlacement, str]] = (
        [("wake", r.placement, r.replica_id) for r in wakes] + [("start", p, "") for p in starts]
        + [("park_start", p, "") for p in park_hints])
    remaining = list(stops) + list(parks)
    park_ids = {r.replica_id for r in parks}
    mem = list(live_mem)
    ready = [r.placement.variant for r in keep + stops + parks]
    gap: set[str] = set()
    unplaceable: tuple[ReplicaPlacement, ...] = ()

    def fits(item: tuple[str, ReplicaPlacement, str], mem: list[ReplicaPlacement], pmem: list[ReplicaPlacement]) -> bool:
        kind, p, _ = item
        if kind == "wake":
            others = list(pmem)
            others.remove(p)
            return resources.fits(mem, p, others)
        return resources.fits(mem, p, pmem, new_parked=kind == "park_start")

    def phase(done: list[tuple[str, ReplicaPlacement, str]], out: Sequence[LiveReplica], forced: bool = False) -> Phase:
        return Phase(starts=tuple(p for k, p, _ in done if k == "start"), wakes=tuple(i for k, _, i in done if k == "wake"),
                     park_starts=tuple(p for k, p, _ in done if k == "park_start"),
                     drains=tuple(r.replica_id for r in out if r.replica_id not in park_ids),
                     parks=tuple(r.replica_id for r in out if r.replica_id in park_ids), forced=forced)

    while True:
        done = []
        for item in list(pending):
            if fits(item, mem, pmem):
                kind, p, _ = item
                if kind == "wake":
                    pmem.remove(p)
                    mem.append(p)
                elif kind == "start":
                    mem.append(p)
                else:
                    pmem.append(p)
                done.append(item)
                pending.remove(item)
        ready += [p.variant for k, p, _ in done if k != "park_start"]
        if not pending:
            phases.append(phase(done, remaining))
            break
        nodes = {p.node for _, p, _ in pending}
        cands = [r for r in remaining if r.placement.node in nodes]
        if not cands:
            unplaceable = tuple(p for k, p, _ in pending if k != "wake")
            phases.append(phase(done, remaining))
            break

        def rank(r: LiveReplica, ready=ready, mem=mem, pmem=pmem, pending=pending) -> tuple[int, int, int, str]:
            rest = list(ready)
            rest.remove(r.placement.variant)
            keeps = protected <= covered_classes(rest, table)
            others = [x for x in mem if x is not r.placement]
            after = pmem + [r.placement] if r.replica_id in park_ids else pmem
            enables = any(fits(it, others, after) for it in pending)
            freed = sum(resources.need(r.placement).values())
            return (0 if keeps else 1, 0 if enables else 1, -freed, r.replica_id)

        best = min(cands, key=rank)
        rest = list(ready)
        rest.remove(best.placement.variant)
        lost = protected - covered_classes(rest, table)
        gap |= lost
        phases.append(phase(done, [best], forced=bool(lost)))
        remaining.remove(best)
        mem.remove(best.placement)
        if best.replica_id in park_ids:
            pmem.append(best.placement)
        ready = rest
    phases = [ph for ph in phases if ph.starts or ph.drains or ph.wakes or ph.parks or ph.park_starts] or [Phase()]
    mbb = not unplaceable and all(not (ph.starts or ph.wakes) for ph in phases[1:])
    return SwitchSteps(
        keep=tuple(r.replica_id for r in keep + park_keep),
        cleanup=tuple(cleanup),
        starts=tuple(starts) + tuple(park_hints),
        stops=tuple(r.replica_id for r in stops),
        phases=tuple(phases),
        unplaceable=unplaceable,
        make_before_break=mbb,
        capacity_gap_classes=tuple(sorted(gap)),
        wakes=tuple(r.replica_id for r in wakes),
        parks=tuple(r.replica_id for r in parks),
    )


def drain_blocker(variant: str, is_ready: bool, ready_variants: Sequence[str], target: Plan,
                  table: ProfileTable, *, forced: bool = False) -> str:
    """Why draining one replica now would leave a class without capacity (empty if it would not).

    A class is protected when a ready replica serves it now and the target serves it too; a drain
    that leaves a protected class with no ready replica is skipped, unless the phase was planned as
    ``forced`` (no other order existed; see :attr:`Phase.forced`).

    Args:
        variant: the variant of the replica to drain.
        is_ready: whether that replica is ready now (only then does its drain remove capacity).
        ready_variants: the variant of every ready replica now, that one included, one entry each.
        target: the plan the transition heads for.
        table: the profile table (which classes each variant serves).
        forced: the phase's ``forced`` flag.

    Returns:
        A reason such as ``"classes ['a'] would have no capacity"``, or ``""``.
    """
    if forced:
        return ""
    rest = list(ready_variants)
    if is_ready:
        rest.remove(variant)
    protected = covered_classes(ready_variants, table) & covered_classes((p.variant for p in target.replicas), table)
    lost = protected - covered_classes(rest, table)
    return f"classes {sorted(lost)} would have no capacity" if lost else ""


def rollback_starts(drained: Sequence[ReplicaPlacement], ready_variants: Iterable[str],
                    occupied: Sequence[ReplicaPlacement], resources: ResourceModel,
                    table: ProfileTable) -> tuple[ReplicaPlacement, ...]:
    """The drained replicas to start again after a phase's starts failed (a rollback).

    A rolling transition drains old replicas to make room before the new ones start; when those
    starts fail, the classes the drained replicas served may be left with no ready replica. This
    picks, in drain order, each drained placement that serves a class no ready replica (nor one
    already picked) serves, and that fits in memory beside ``occupied`` and the ones picked.

    Args:
        drained: placements of the replicas drained and stopped so far in this transition, in order.
        ready_variants: the variant of every ready replica now.
        occupied: placements that hold memory now (every replica in the registry).
        resources: memory accounting.
        table: the profile table (which classes each variant serves).

    Returns:
        The placements to start again (empty when every class they served still has capacity).
    """
    covered = covered_classes(ready_variants, table)
    mem = list(occupied)
    out: list[ReplicaPlacement] = []
    for p in drained:
        if not covered_classes((p.variant,), table) - covered or not resources.fits(mem, p):
            continue
        out.append(p)
        mem.append(p)
        covered |= covered_classes((p.variant,), table)
    return tuple(out)


def backed_off_starts(plan: Plan, actual: Plan, failed_until_s: dict[tuple[str, str], float],
                      now_s: float) -> list[tuple[str, str]]:
    """The ``(variant, node)`` pairs ``plan`` would start although their start failed recently.

    Args:
        plan: the plan the controller decided.
        actual: the real deployment now.
        failed_until_s: per ``(variant, node)``, the clock time (s) until which a start that failed
            is backed off.
        now_s: the clock time now, s.

    Returns:
        The pairs, sorted, for which ``plan`` has more replicas than run now while backed off.
    """
    want, have = placement_counts(plan), placement_counts(actual)
    return sorted(k for k, until in failed_until_s.items() if now_s < until and want[k] > have[k])


def unneeded_starts(starting: Iterable[tuple[str, ReplicaPlacement]], ready: Iterable[ReplicaPlacement],
                    next_target: Plan | None) -> list[str]:
    """Replicas still starting that the queued target does not need.

    Per ``(variant, node)``, the ready replicas count first; starting ones are kept in replica-id
    order up to the target's count and the rest are returned (to cancel).

    Args:
        starting: ``(replica_id, placement)`` of the replicas whose start is still running.
        ready: placements of the ready replicas.
        next_target: the queued target; None needs nothing.

    Returns:
        Replica ids to cancel, sorted.
    """
    want = placement_counts(next_target)
    have = Counter((p.variant, p.node) for p in ready)
    out = []
    for rid, p in sorted(starting, key=lambda x: x[0]):
        key = (p.variant, p.node)
        if have[key] < want[key]:
            have[key] += 1
        else:
            out.append(rid)
    return out


def switch_status(*, interrupted: bool, steps: int, failed: int, routed: bool, actual: Plan,
                  target: Plan) -> SwitchStatus:
    """The outcome of one transition.

    Args:
        interrupted: a newer target stopped it at a safe point.
        steps: replica and routing steps recorded.
        failed: how many of them failed (or were skipped).
        routed: whether the routing in force changed.
        actual: the real deployment afterwards.
        target: the plan asked for.

    Returns:
        ``superseded``, ``unchanged`` (nothing done), ``applied`` (the real active and parked
        replicas match the target and no step failed), ``failed`` (every step failed) or ``partial``.
    """
    if interrupted:
        return "superseded"
    if not steps and not routed:
        return "unchanged"
    if (placement_counts(actual) == placement_counts(target) and actual.parked_counts() == target.parked_counts()
            and not failed):
        return "applied"
    if failed == steps:
        return "failed"
    return "partial"


def planning_base(in_progress: Plan | None, last_target: Plan | None, actual: Plan) -> Plan:
    """The plan the controller compares a new decision with.

    The target in progress (running or queued), else the last target when the real replicas match
    it (so its routing weights count), else the real deployment (after a failure or a partial
    switch, so the planner sees what runs).

    Args:
        in_progress: the switcher's target in progress, or None.
        last_target: the last target submitted, or None.
        actual: the real deployment now.
    """
    if in_progress is not None:
        return in_progress
    if (last_target is not None and placement_counts(actual) == placement_counts(last_target)
            and actual.parked_counts() == last_target.parked_counts()):
        return last_target
    return actual


@dataclass(frozen=True)
class Relocation:
    """What :func:`relocate_plan` did.

    Attributes:
        plan: the plan on the remaining nodes.
        moved: ``(old placement, new placement)`` for each replica moved off a node that is gone.
        dropped: placements on gone nodes that fit on no remaining node (their capacity is lost).
    """

    plan: Plan
    moved: tuple[tuple[ReplicaPlacement, ReplicaPlacement], ...] = ()
    dropped: tuple[ReplicaPlacement, ...] = ()

    @property
    def changed(self) -> bool:
        return bool(self.moved or self.dropped)


def relocate_plan(plan: Plan, resources: ResourceModel) -> Relocation:
    """Move the replicas that ``plan`` places on nodes absent from ``resources.cluster`` to the nodes
    that remain.

    Replicas on remaining nodes stay as they are. Each replica on a gone node is placed, in plan
    order, on a remaining node of the same device type where its memory fits beside the replicas
    already placed (:meth:`ResourceModel.fits`), the node with the most free memory first (ties by
    name); its device ids are the node's least-used ones (the switcher may still pick other free
    devices when it starts it). A replica that fits nowhere is dropped, and the routing weights of a variant left
    without replicas are removed (the other variants' weights of that class are rescaled to sum
    to 1). The planner is not consulted: this keeps the capacity of a pinned plan, or of the last
    target, until the next control decision re-plans on the new cluster.

    Args:
        plan: the plan written for the old cluster.
        resources: memory accounting of the new cluster (``ResourceModel.with_cluster``).

    Returns:
        The :class:`Relocation` (``plan`` itself, unchanged, when no replica was on a gone node).
    """
    nodes = {n.name: n for n in resources.cluster.nodes}
    kept = [p for p in plan.replicas if p.node in nodes]
    lost = [p for p in plan.replicas if p.node not in nodes]
    if not lost:
        if any(p.node not in nodes for p in plan.parked):
            return Relocation(plan=plan.model_copy(update={"parked": [p for p in plan.parked if p.node in nodes]}))
        return Relocation(plan=plan)
    placed = list(kept)
    moved: list[tuple[ReplicaPlacement, ReplicaPlacement]] = []
    dropped: list[ReplicaPlacement] = []
    for p in lost:
        profile = resources.table.variants.get(p.variant)
        width = len(p.device_ids)
        used = resources.usage(placed)
        free = {n: nodes[n].device_memory_bytes * nodes[n].devices - sum(b for k, b in used.items() if k[0] == n)
                for n in nodes}
        target = None
        for name in sorted(nodes, key=lambda n: (-free[n], n)):
            node = nodes[name]
            if profile is None or node.device_type.lower() != profile.device_type.lower() or node.devices < width:
                continue
            # the least-used devices (ties by id); on a pooled (CPU) node every core counts alike
            order = sorted(range(node.devices),
                           key=lambda d, n=name: (used[(n, None if resources.pooled(n) else d)], d))
            cand = ReplicaPlacement(variant=p.variant, node=name, device_ids=tuple(sorted(order[:width])))
            if resources.fits(placed, cand):
                target = cand
                break
        if target is None:
            dropped.append(p)
        else:
            placed.append(target)
            moved.append((p, target))
    variants = {p.variant for p in placed}
    routing: dict[str, dict[str, float]] = {}
    for c, ws in plan.routing.items():
        left = {v: w for v, w in ws.items() if v in variants and w > 0}
        total = sum(left.values())
        if total > 0:
            routing[c] = {v: w / total for v, w in left.items()}
    why = f"relocated {len(moved)} replica(s) off gone node(s)" + (f", dropped {len(dropped)}" if dropped else "")
    new = plan.model_copy(update={"replicas": placed, "routing": routing,
                                  "parked": [p for p in plan.parked if p.node in nodes],  # parked ones are not moved
                                  "reason": f"{plan.reason}; {why}" if plan.reason else why})
    return Relocation(plan=new, moved=tuple(moved), dropped=tuple(dropped))
