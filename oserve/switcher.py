"""The switcher: moves the running replicas from the current plan to a target plan without losing requests.

Two parts with one job each:

* :func:`plan_steps` (pure) diffs the real replicas against a target :class:`~oserve.policies.plan.Plan`
  and orders the work into phases. Each phase first starts replicas (concurrently), then shifts
  routing, then drains and stops replicas. Where the memory of the nodes allows, every new replica
  starts in the first phase while the old ones keep serving (make-before-break). Where it does not,
  old replicas are drained one per phase (rolling), preferring one whose removal leaves every request
  class some capacity; only when no such order exists is a class left without capacity for a moment
  (reported in :attr:`SwitchSteps.capacity_gap_classes`).
* :class:`Switcher` executes those phases on a :class:`~oserve.backends.base.Backend` and a router,
  one transition at a time. A target that arrives mid-transition replaces any queued one (latest
  wins) and interrupts the running transition at its next safe point: replicas still starting that
  the new target does not need are cancelled, running replicas are not drained, and the next
  transition starts from the real state. Its registry of replicas is the truth about what runs.

Resources (:class:`ResourceModel`): memory is the hard limit. On GPU nodes each device's memory is
checked (a replica of a variant uses ``memory_per_device_bytes`` on each of its devices). On CPU
nodes memory is one pool per node (``devices * device_memory_bytes``) and cores may be shared by an
old and a new replica for the short overlap of a switch.

Draining a replica: the router marks it ``draining`` at once (no new requests), in-flight requests,
streams included, finish up to ``drain_timeout_s``, the rest are aborted by the replica with an
explicit error (``RequestAbortedError``), then the engine stops and its memory is released before any
replica of a later phase starts.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal, Protocol

from oserve.backends.base import Backend, Replica, ReplicaSpec, ReplicaState, SamplingParams
from oserve.clock import Clock, WallClock
from oserve.controller import placement_counts, plans_equal
from oserve.errors import ConfigError, EngineStartError
from oserve.policies.plan import ClusterSpec, Plan, ReplicaPlacement
from oserve.profiles.table import ProfileTable

__all__ = [
    "ResourceModel",
    "LiveReplica",
    "Phase",
    "SwitchSteps",
    "plan_steps",
    "covered_classes",
    "effective_routing",
    "StepRecord",
    "SwitchResult",
    "ManagedReplica",
    "Switcher",
    "SpecFactory",
    "spec_factory_from_templates",
]

log = logging.getLogger(__name__)

SpecFactory = Callable[[ReplicaPlacement, str], ReplicaSpec]
"""Maps a plan's replica placement and a new replica id to the :class:`ReplicaSpec` to start."""



def spec_factory_from_templates(templates: dict[str, ReplicaSpec], cluster: ClusterSpec) -> SpecFactory:
    """A :data:`SpecFactory` that copies a per-variant template and sets where the replica runs.

    Args:
        templates: variant name -> the :class:`ReplicaSpec` to start for it (model path, dtype,
            TP/PP, max_num_seqs, ...); its ``cpu_cores`` / ``devices`` are replaced per replica.
        cluster: the nodes; on a node whose ``device_type`` is ``"cpu"`` the placement's device ids
            become ``cpu_cores``, otherwise ``devices`` (GPU ids).

    Returns:
        ``factory(placement, replica_id) -> ReplicaSpec``.

    Raises (when called):
        ConfigError: no template for the placement's variant, or an unknown node.
    """
    kinds = {n.name: n.device_type.lower() for n in cluster.nodes}

    def factory(placement: ReplicaPlacement, replica_id: str) -> ReplicaSpec:
        tpl = templates.get(placement.variant)
        if tpl is None:
            raise ConfigError(f"no replica template for variant {placement.variant!r}", field="variants",
                              allowed=", ".join(sorted(templates)))
        if placement.node not in kinds:
            raise ConfigError(f"unknown node {placement.node!r}", field="plan.replicas.node",
                              allowed=", ".join(sorted(kinds)))
        ids = tuple(placement.device_ids)
        if kinds[placement.node] == "cpu":
            return tpl.model_copy(update={"variant": placement.variant, "cpu_cores": ids, "node": placement.node})
        return tpl.model_copy(update={"variant": placement.variant, "devices": ids, "node": placement.node})

    return factory


_MemKey = tuple[str, int | None]  # (node, device) on GPU nodes; (node, None) for a CPU node's pool


# --------------------------------------------------------------------------------------------- resources
class ResourceModel:
    """Memory accounting of a cluster for a set of replica placements.

    Args:
        cluster: the nodes.
        table: the profile table (``memory_per_device_bytes`` and ``devices_per_replica`` per variant).
        pooled_nodes: names of nodes whose memory is one pool; default: the nodes whose
            ``device_type`` is ``"cpu"``.
        share_cpu_cores: on pooled (CPU) nodes, let an old and a new replica use the same cores for
            the overlap of a switch (memory stays the hard limit). False makes cores exclusive, so
            a switch that needs a busy core rolls instead (use it with a backend that refuses
            shared cores, e.g. ``VLLMBackend`` without ``OSERVE_ALLOW_CORE_SHARING=1``).

    Raises (from the methods):
        ConfigError: a placement names an unknown node, a device id out of range, or a variant the
            table lacks.
    """

    def __init__(self, cluster: ClusterSpec, table: ProfileTable, *, pooled_nodes: Iterable[str] | None = None,
                 share_cpu_cores: bool = True) -> None:
        self.cluster = cluster
        self.share_cpu_cores = bool(share_cpu_cores)
        self.table = table
        self._nodes = {n.name: n for n in cluster.nodes}
        self._pooled = (
            set(pooled_nodes) if pooled_nodes is not None
            else {n.name for n in cluster.nodes if n.device_type.lower() == "cpu"}
        )

    def pooled(self, node: str) -> bool:
        """True when ``node``'s memory is one pool and its cores may be shared briefly."""
        return node in self._pooled

    def check(self, p: ReplicaPlacement) -> None:
        """Validate a placement against the cluster and table. Raises ConfigError naming the field."""
        node = self._nodes.get(p.node)
        if node is None:
            raise ConfigError(f"placement on unknown node {p.node!r}", field="plan.replicas.node",
                              allowed=", ".join(sorted(self._nodes)))
        if p.variant not in self.table.variants:
            raise ConfigError(f"placement of unknown variant {p.variant!r}", field="plan.replicas.variant",
                              allowed=", ".join(sorted(self.table.variants)))
        bad = [d for d in p.device_ids if not 0 <= d < node.devices]
        if bad:
            raise ConfigError(f"device ids {bad} out of range on node {p.node!r}", field="plan.replicas.device_ids",
                              allowed=f"0..{node.devices - 1}")

    def need(self, p: ReplicaPlacement) -> dict[_MemKey, int]:
        """Memory one replica needs, bytes, per memory key."""
        self.check(p)
        v = self.table.variants[p.variant]
        if self.pooled(p.node):
            return {(p.node, None): v.memory_per_device_bytes * max(v.devices_per_replica, len(p.device_ids), 1)}
        return {(p.node, d): v.memory_per_device_bytes for d in p.device_ids}

    def capacity(self, key: _MemKey) -> int:
        """Memory available under a key, bytes."""
        node = self._nodes[key[0]]
        return node.device_memory_bytes * (node.devices if key[1] is None else 1)

    def usage(self, placements: Iterable[ReplicaPlacement]) -> Counter[_MemKey]:
        """Memory used by ``placements``, bytes, per key."""
        out: Counter[_MemKey] = Counter()
        for p in placements:
            out.update(self.need(p))
        return out

    def fits(self, placements: Iterable[ReplicaPlacement], new: ReplicaPlacement) -> bool:
        """True when ``new`` fits in memory beside ``placements``."""
        placements = list(placements)
        used = self.usage(placements)
        if not all(used[k] + b <= self.capacity(k) for k, b in self.need(new).items()):
            return False
        if self.pooled(new.node) and not self.share_cpu_cores:
            busy = {d for p in placements if p.node == new.node for d in p.device_ids}
            return not busy & set(new.device_ids)
        return True


# --------------------------------------------------------------------------------------------- pure planning
@dataclass(frozen=True)
class LiveReplica:
    """A replica as the step planner sees it."""

    replica_id: str
    placement: ReplicaPlacement
    state: ReplicaState


@dataclass(frozen=True)
class Phase:
    """One phase of a transition: start replicas, shift routing, then drain and stop replicas.

    Attributes:
        starts: placements to start concurrently (devices chosen).
        drains: replica ids to drain and stop concurrently after the starts are ready.
        forced: True when a drain leaves some class without capacity (no other order existed).
    """

    starts: tuple[ReplicaPlacement, ...] = ()
    drains: tuple[str, ...] = ()
    forced: bool = False


@dataclass(frozen=True)
class SwitchSteps:
    """The ordered work of one transition (output of :func:`plan_steps`).

    Attributes:
        keep: replica ids that stay.
        cleanup: replica ids in a failed or stopped state to stop first (they serve nothing).
        starts: every placement to start, with the devices chosen.
        stops: every running replica id to drain and stop.
        phases: the order of the work.
        unplaceable: target placements that cannot fit even after every planned stop.
        make_before_break: True when all starts come before any drain.
        capacity_gap_classes: classes left without capacity between two phases (unavoidable).
    """

    keep: tuple[str, ...]
    cleanup: tuple[str, ...]
    starts: tuple[ReplicaPlacement, ...]
    stops: tuple[str, ...]
    phases: tuple[Phase, ...]
    unplaceable: tuple[ReplicaPlacement, ...] = ()
    make_before_break: bool = True
    capacity_gap_classes: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        """True when nothing has to start or stop."""
        return not (self.starts or self.stops or self.cleanup)


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

    Replicas are matched per ``(variant, node)``: up to the target count of the running ones are
    kept (the ones whose devices the target names first, then by id), the others stop, and the
    missing ones start on devices that are free in the final layout (the target's if possible).

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
    for p in target.replicas:
        resources.check(p)
    serving = [r for r in live if r.state in ("ready", "starting")]
    cleanup = tuple(r.replica_id for r in live if r.state not in ("ready", "starting", "draining"))
    draining = [r for r in live if r.state == "draining"]

    tgt_by_key: dict[tuple[str, str], list[ReplicaPlacement]] = {}
    for p in target.replicas:
        tgt_by_key.setdefault((p.variant, p.node), []).append(p)
    cur_by_key: dict[tuple[str, str], list[LiveReplica]] = {}
    for r in sorted(serving, key=lambda r: r.replica_id):
        cur_by_key.setdefault((r.placement.variant, r.placement.node), []).append(r)

    keep: list[LiveReplica] = []
    stops: list[LiveReplica] = []
    hints: list[ReplicaPlacement] = []
    for key in sorted(set(tgt_by_key) | set(cur_by_key)):
        wanted = list(tgt_by_key.get(key, []))
        cur = cur_by_key.get(key, [])
        target_devs = {p.device_ids for p in wanted}
        cur = sorted(cur, key=lambda r: (r.placement.device_ids not in target_devs, r.replica_id))
        n = len(wanted)
        kept = cur[:n]
        keep += kept
        stops += cur[n:]
        for r in kept:  # the target placements not matched by a kept replica's devices are start hints
            if r.placement.device_ids in [p.device_ids for p in wanted]:
                wanted.remove(next(p for p in wanted if p.device_ids == r.placement.device_ids))
        hints += wanted[: max(0, n - len(kept))]

    final_taken = {(r.placement.node, d) for r in keep for d in r.placement.device_ids}
    live_mem = [r.placement for r in keep + stops + draining]
    starts: list[ReplicaPlacement] = []
    for h in hints:
        p = _choose_devices(h, final_taken, live_mem + starts, resources)
        starts.append(p)
        final_taken.update((p.node, d) for d in p.device_ids)

    protected = covered_classes((r.placement.variant for r in serving), table) & covered_classes(
        (p.variant for p in target.replicas), table)

    phases: list[Phase] = []
    pending = list(starts)
    remaining = list(stops)
    mem = list(live_mem)
    ready = [r.placement.variant for r in keep + stops]
    gap: set[str] = set()
    unplaceable: tuple[ReplicaPlacement, ...] = ()
    while True:
        ph_starts = []
        for s in list(pending):
            if resources.fits(mem, s):
                mem.append(s)
                ph_starts.append(s)
                pending.remove(s)
        ready += [s.variant for s in ph_starts]
        if not pending:
            phases.append(Phase(starts=tuple(ph_starts), drains=tuple(r.replica_id for r in remaining)))
            break
        nodes = {s.node for s in pending}
        cands = [r for r in remaining if r.placement.node in nodes]
        if not cands:
            unplaceable = tuple(pending)
            drains = tuple(r.replica_id for r in remaining)
            phases.append(Phase(starts=tuple(ph_starts), drains=drains))
            break

        def rank(r: LiveReplica, ready=ready, mem=mem, pending=pending) -> tuple[int, int, int, str]:
            rest = list(ready)
            rest.remove(r.placement.variant)
            keeps = protected <= covered_classes(rest, table)
            others = [m for m in mem if m is not r.placement]
            enables = any(resources.fits(others, s) for s in pending)
            freed = sum(resources.need(r.placement).values())
            return (0 if keeps else 1, 0 if enables else 1, -freed, r.replica_id)

        best = min(cands, key=rank)
        rest = list(ready)
        rest.remove(best.placement.variant)
        lost = protected - covered_classes(rest, table)
        gap |= lost
        phases.append(Phase(starts=tuple(ph_starts), drains=(best.replica_id,), forced=bool(lost)))
        remaining.remove(best)
        mem.remove(best.placement)
        ready = rest
    phases = [ph for ph in phases if ph.starts or ph.drains] or [Phase()]
    mbb = not unplaceable and all(not ph.starts for ph in phases[1:])
    return SwitchSteps(
        keep=tuple(r.replica_id for r in keep),
        cleanup=cleanup,
        starts=tuple(starts),
        stops=tuple(r.replica_id for r in stops),
        phases=tuple(phases),
        unplaceable=unplaceable,
        make_before_break=mbb,
        capacity_gap_classes=tuple(sorted(gap)),
    )


# --------------------------------------------------------------------------------------------- execution
StepKind = Literal["start", "warm", "route", "drain", "stop", "cancel", "skip"]


@dataclass(frozen=True)
class StepRecord:
    """What one step did.

    Attributes:
        kind: ``start``, ``warm``, ``route``, ``drain``, ``stop``, ``cancel`` or ``skip``.
        replica_id: the replica concerned (empty for ``route``).
        variant / node: its placement.
        ok: False when the step failed.
        detail: error text, aborted count, or why a step was skipped.
        started_s / finished_s: clock times, seconds.
    """

    kind: StepKind
    replica_id: str
    variant: str
    node: str
    ok: bool
    detail: str
    started_s: float
    finished_s: float


@dataclass(frozen=True)
class SwitchResult:
    """The outcome of one transition.

    Attributes:
        target: the plan asked for.
        status: ``applied`` (the real replicas match the target), ``unchanged`` (nothing to do),
            ``partial`` (some step failed or was skipped; see ``steps``), ``failed`` (no step
            succeeded), or ``superseded`` (a newer target interrupted it, or it never started).
        steps: the steps in the order they finished.
        started_s / finished_s: clock times, seconds; ``duration_s`` their difference.
        actual: the real deployment afterwards (ready replicas and the routing in force).
        make_before_break: whether the transition was planned make-before-break.
        capacity_gap_classes: classes that had no capacity for a moment (rolling without choice).
        unplaceable: target placements that could not fit.
        aborted_requests: requests aborted by drain timeouts.
    """

    target: Plan
    status: Literal["applied", "unchanged", "partial", "failed", "superseded"]
    steps: tuple[StepRecord, ...]
    started_s: float
    finished_s: float
    actual: Plan
    make_before_break: bool = True
    capacity_gap_classes: tuple[str, ...] = ()
    unplaceable: tuple[ReplicaPlacement, ...] = ()
    aborted_requests: int = 0

    @property
    def duration_s(self) -> float:
        """Transition time, seconds."""
        return self.finished_s - self.started_s

    @property
    def replicas_changed(self) -> bool:
        """True when a replica was started, cancelled, stopped or skipped (not a routing-only change)."""
        return any(s.kind != "route" for s in self.steps)

    @property
    def failed_steps(self) -> tuple[StepRecord, ...]:
        """Steps that failed."""
        return tuple(s for s in self.steps if not s.ok)

    def to_dict(self) -> dict:
        """A JSON-ready summary."""
        return {
            "status": self.status,
            "started_s": self.started_s,
            "finished_s": self.finished_s,
            "duration_s": self.duration_s,
            "replicas_changed": self.replicas_changed,
            "make_before_break": self.make_before_break,
            "capacity_gap_classes": list(self.capacity_gap_classes),
            "unplaceable": [p.model_dump(mode="json") for p in self.unplaceable],
            "aborted_requests": self.aborted_requests,
            "target": self.target.model_dump(mode="json"),
            "actual": self.actual.model_dump(mode="json"),
            "steps": [asdict(s) for s in self.steps],
        }


class RouterPort(Protocol):
    """What the switcher needs from the router (``oserve.router.Router`` provides it)."""

    def add(self, replica: Replica) -> None: ...

    def remove(self, replica_id: str) -> None: ...

    def set_state(self, replica_id: str, state: ReplicaState) -> None: ...

    def set_routing(self, routing: dict[str, dict[str, float]]) -> None: ...


@dataclass
class ManagedReplica:
    """The switcher's record of one replica.

    Attributes:
        replica_id: unique id.
        placement: where it runs (devices chosen).
        state: ``starting`` (engine starting or warming up), ``ready``, ``draining``, ``failed``.
        replica: the backend's handle once started.
        started_s: clock time the start began, seconds.
        reaper: while the engine start is abandoned (cancelled or timed out), the task that waits
            for it and stops the engine; None otherwise.
    """

    replica_id: str
    placement: ReplicaPlacement
    state: ReplicaState
    replica: Replica | None = None
    started_s: float = 0.0
    reaper: asyncio.Task[None] | None = None


@dataclass
class _Request:
    target: Plan
    futures: list[asyncio.Future[SwitchResult]] = field(default_factory=list)


class Switcher:
    """Executes transitions between plans on a backend, one at a time.

    Args:
        backend: starts replicas.
        router: receives replicas (``add``/``remove``/``set_state``) and routing weights.
        spec_factory: ``(placement, replica_id) -> ReplicaSpec``.
        resources: memory accounting of the cluster.
        clock: for step timestamps (WallClock by default).
        drain_timeout_s: how long in-flight requests may take to finish when a replica drains, s.
        start_timeout_s: how long an engine may take to start, s; past it the start fails with
            ``EngineStartError(cause="timeout")``.
        warmup_requests: real requests sent to each new replica before it gets traffic (>= 0).
        warmup_max_tokens: output tokens of each warm-up request.
        warmup_prompt: the warm-up prompt.
        stop_timeout_s: how long ``Replica.stop`` may take before the replica is reported failed, s.

    Raises:
        ConfigError: a negative timeout or warm-up count.
    """

    def __init__(
        self,
        backend: Backend,
        router: RouterPort,
        spec_factory: SpecFactory,
        resources: ResourceModel,
        *,
        clock: Clock | None = None,
        drain_timeout_s: float = 30.0,
        start_timeout_s: float = 600.0,
        warmup_requests: int = 2,
        warmup_max_tokens: int = 4,
        warmup_prompt: str = "Hello, how are you?",
        stop_timeout_s: float = 60.0,
    ) -> None:
        for name, val in (("drain_timeout_s", drain_timeout_s), ("start_timeout_s", start_timeout_s),
                          ("stop_timeout_s", stop_timeout_s), ("warmup_requests", warmup_requests)):
            if val < 0:
                raise ConfigError(f"{name} must be >= 0, got {val}", field=name, allowed=">= 0")
        if warmup_max_tokens < 1:
            raise ConfigError(f"warmup_max_tokens must be >= 1, got {warmup_max_tokens}",
                              field="warmup_max_tokens", allowed=">= 1")
        self.backend = backend
        self.router = router
        self.spec_factory = spec_factory
        self.resources = resources
        self.table = resources.table
        self.clock = clock or WallClock()
        self.drain_timeout_s = float(drain_timeout_s)
        self.start_timeout_s = float(start_timeout_s)
        self.stop_timeout_s = float(stop_timeout_s)
        self.warmup_requests = int(warmup_requests)
        self.warmup_max_tokens = int(warmup_max_tokens)
        self.warmup_prompt = warmup_prompt
        self._replicas: dict[str, ManagedReplica] = {}
        self._routing: dict[str, dict[str, float]] = {}
        self._target_routing: dict[str, dict[str, float]] = {}
        self._seq = itertools.count()
        self._pending: _Request | None = None
        self._running: _Request | None = None
        self._worker: asyncio.Task[None] | None = None
        self._interrupt = asyncio.Event()
        self._steps: list[StepRecord] = []
        self._aborted = 0
        self.results: list[SwitchResult] = []
        self.on_result: list[Callable[[SwitchResult], None]] = []
        self.on_step: list[Callable[[StepRecord], None]] = []

    # ----------------------------------------------------------------- views
    @property
    def replicas(self) -> dict[str, ManagedReplica]:
        """The replicas that exist now (a copy), by id."""
        return dict(self._replicas)

    @property
    def busy(self) -> bool:
        """True while a transition runs or one is queued."""
        return self._running is not None or self._pending is not None

    @property
    def target(self) -> Plan | None:
        """The newest plan asked for that is not yet finished (queued or running), else None."""
        if self._pending is not None:
            return self._pending.target
        return self._running.target if self._running is not None else None

    @property
    def routing(self) -> dict[str, dict[str, float]]:
        """Routing weights in force (restricted to ready variants)."""
        return {c: dict(w) for c, w in self._routing.items()}

    def actual_plan(self) -> Plan:
        """The real deployment: ready replicas and the routing in force."""
        reps = [m.placement for m in sorted(self._replicas.values(), key=lambda m: m.replica_id) if m.state == "ready"]
        return Plan(replicas=reps, routing=self.routing, reason="actual")

    def live(self) -> list[LiveReplica]:
        """The replicas as :func:`plan_steps` sees them."""
        return [LiveReplica(m.replica_id, m.placement, m.state) for m in self._replicas.values()]

    # ----------------------------------------------------------------- submitting
    def submit(self, target: Plan, *, merge: bool = True) -> asyncio.Future[SwitchResult]:
        """Ask for a transition to ``target``; returns a future of its result.

        One transition runs at a time. If one is running, ``target`` is queued (replacing any
        queued target, whose future resolves ``superseded``) and the running one is interrupted at
        its next safe point unless it already heads for an equal plan and ``merge`` is True (then
        the futures merge). Use ``merge=False`` after a replica died, so that a fresh transition
        from the real state replaces it.

        Raises:
            ConfigError: the target places a replica on an unknown node/device or variant.
        """
        for p in target.replicas:
            self.resources.check(p)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[SwitchResult] = loop.create_future()
        had_pending = self._pending is not None
        if self._pending is not None:
            if merge and plans_equal(self._pending.target, target):
                self._pending.futures.append(fut)
                return fut
            self._resolve(self._pending, self._superseded(self._pending.target))
            self._pending = None
        if merge and self._running is not None and not had_pending and plans_equal(self._running.target, target):
            self._running.futures.append(fut)
            return fut
        self._pending = _Request(target, [fut])
        if self._running is not None:
            self._interrupt.set()
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._work(), name="oserve-switcher")
        return fut

    async def apply(self, target: Plan) -> SwitchResult:
        """Submit ``target`` and wait for its transition's result."""
        return await self.submit(target)

    async def idle(self) -> None:
        """Wait until no transition runs or is queued."""
        while self._worker is not None and not self._worker.done():
            await asyncio.shield(self._worker)

    # ----------------------------------------------------------------- failures and shutdown
    async def replica_failed(self, replica_id: str, reason: str) -> None:
        """Take a dead or hung replica out at once, stop it (best effort) and forget it.

        Side effects: router ``set_state(failed)`` then ``remove``; a ``stop`` step is recorded.
        The next transition to the target starts a replacement.
        """
        m = self._replicas.get(replica_id)
        if m is None:
            return
        t0 = self.clock.now()
        m.state = "failed"
        self._router_call("set_state", replica_id, "failed")
        self._router_call("remove", replica_id)
        ok, detail = True, f"replica failed: {reason}"
        if m.replica is not None:
            try:
                await asyncio.wait_for(m.replica.stop(), self.stop_timeout_s)
            except Exception as exc:  # noqa: BLE001 - a dead engine may fail in any way while stopping
                ok, detail = False, f"{detail}; stop failed: {exc!r}"
        if ok:
            self._replicas.pop(replica_id, None)
        self._refresh_routing()
        self._record("stop", m, ok, detail, t0)

    async def shutdown(self, drain_timeout_s: float | None = None) -> None:
        """Cancel queued and running transitions, then drain and stop every replica."""
        if self._pending is not None:
            self._resolve(self._pending, self._superseded(self._pending.target))
            self._pending = None
        if self._worker is not None and not self._worker.done():
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        timeout = self.drain_timeout_s if drain_timeout_s is None else drain_timeout_s
        await asyncio.gather(*(self._drain_stop(rid, timeout) for rid in list(self._replicas)))

    # ----------------------------------------------------------------- the worker
    async def _work(self) -> None:
        while self._pending is not None:
            req, self._pending = self._pending, None
            self._running = req
            self._interrupt.clear()
            try:
                result = await self._transition(req.target)
            except asyncio.CancelledError:
                self._resolve(req, self._superseded(req.target))
                self._running = None
                raise
            except Exception as exc:  # noqa: BLE001 - report any unexpected failure as a failed transition
                log.exception("transition failed")
                now = self.clock.now()
                result = SwitchResult(req.target, "failed", (StepRecord("skip", "", "", "", False, repr(exc), now, now),),
                                      now, now, self.actual_plan())
            self._running = None
            self.results.append(result)
            for cb in self.on_result:
                try:
                    cb(result)
                except Exception:  # noqa: BLE001 - an observer must not stop the switcher
                    log.exception("on_result callback raised")
            self._resolve(req, result)

    @staticmethod
    def _resolve(req: _Request, result: SwitchResult) -> None:
        for f in req.futures:
            if not f.done():
                f.set_result(result)

    def _superseded(self, target: Plan) -> SwitchResult:
        now = self.clock.now()
        return SwitchResult(target, "superseded", (), now, now, self.actual_plan())

    async def _transition(self, target: Plan) -> SwitchResult:
        t0 = self.clock.now()
        self._steps = []
        self._aborted = 0
        self._target_routing = {c: dict(w) for c, w in target.routing.items()}
        steps = plan_steps(self.live(), target, self.resources, self.table)
        for rid in steps.cleanup:
            await self._drain_stop(rid, 0.0)
        interrupted = False
        routed = False
        for phase in steps.phases:
            if self._pending is not None:
                interrupted = True
                break
            await self._run_starts(phase.starts)
            routed |= self._refresh_routing(record=True)
            if self._pending is not None:
                interrupted = True
                break
            drains = []
            for rid in phase.drains:
                reason = self._drain_blocker(rid, target, phase.forced)
                m = self._replicas.get(rid)
                if reason and m is not None:
                    self._record("skip", m, False, f"drain skipped: {reason}", self.clock.now())
                else:
                    drains.append(rid)
            await asyncio.gather(*(self._drain_stop(rid, self.drain_timeout_s) for rid in drains))
        routed |= self._refresh_routing(record=True)
        t1 = self.clock.now()
        actual = self.actual_plan()
        for p in steps.unplaceable:
            self._steps.append(StepRecord("skip", "", p.variant, p.node, False, "does not fit in memory", t1, t1))
        failed = [s for s in self._steps if not s.ok]
        if interrupted:
            status = "superseded"
        elif not self._steps and not routed:
            status = "unchanged"
        elif placement_counts(actual) == placement_counts(target) and not failed:
            status = "applied"
        elif len(failed) == len(self._steps):
            status = "failed"
        else:
            status = "partial"
        return SwitchResult(target, status, tuple(self._steps), t0, t1, actual, steps.make_before_break,
                            steps.capacity_gap_classes, steps.unplaceable, self._aborted)

    def _drain_blocker(self, rid: str, target: Plan, forced: bool) -> str:
        """Why draining ``rid`` now would leave a class without capacity (empty if it would not)."""
        m = self._replicas.get(rid)
        if m is None or forced:
            return ""
        ready = [x.placement.variant for x in self._replicas.values() if x.state == "ready"]
        if m.state == "ready":
            ready.remove(m.placement.variant)
        protected = covered_classes([x.placement.variant for x in self._replicas.values() if x.state == "ready"],
                                    self.table) & covered_classes((p.variant for p in target.replicas), self.table)
        lost = protected - covered_classes(ready, self.table)
        return f"classes {sorted(lost)} would have no capacity" if lost else ""

    # ----------------------------------------------------------------- starts
    async def _run_starts(self, placements: Sequence[ReplicaPlacement]) -> None:
        tasks: dict[asyncio.Task[None], ManagedReplica] = {}
        for p in placements:
            rid = f"{p.variant}.{p.node}.{next(self._seq)}"
            m = ManagedReplica(rid, p, "starting", None, self.clock.now())
            self._replicas[rid] = m
            tasks[asyncio.get_running_loop().create_task(self._start_one(m), name=f"start-{rid}")] = m
        pending = set(tasks)
        try:
            while pending:
                waiter = asyncio.ensure_future(self._interrupt.wait())
                try:
                    await asyncio.wait(pending | {waiter}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
                pending = {t for t in pending if not t.done()}
                if self._interrupt.is_set():
                    # a newer target is queued: cancel the starts it does not need, let the others finish
                    self._interrupt.clear()
                    for t in self._unneeded_starts({t: tasks[t] for t in pending if not t.cancelling()}):
                        t.cancel()
        except asyncio.CancelledError:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    def _unneeded_starts(self, starting: dict[asyncio.Task[None], ManagedReplica]) -> list[asyncio.Task[None]]:
        """Start tasks the queued target does not need (newest first)."""
        nxt = self._pending.target if self._pending is not None else None
        want = placement_counts(nxt)
        have = Counter((m.placement.variant, m.placement.node) for m in self._replicas.values() if m.state == "ready")
        out = []
        for t, m in sorted(starting.items(), key=lambda kv: kv[1].replica_id):
            key = (m.placement.variant, m.placement.node)
            if have[key] < want[key]:
                have[key] += 1
            else:
                out.append(t)
        return out

    async def _start_one(self, m: ManagedReplica) -> None:
        """Start, warm up and add one replica; never raises (failures and cancels are recorded).

        The backend's ``start_replica`` runs in its own task and is never interrupted: an engine
        half-way through loading (e.g. in a worker thread) cannot be cancelled safely. A cancelled
        start waits for the engine to come up and stops it at once; a start past
        ``start_timeout_s`` is reported failed and the engine is stopped whenever it comes up (the
        replica stays in the registry, as ``failed``, until then).
        """
        t0 = self.clock.now()
        replica: Replica | None = None
        start: asyncio.Task[Replica] | None = None
        try:
            spec = self.spec_factory(m.placement, m.replica_id)
            start = asyncio.get_running_loop().create_task(self.backend.start_replica(spec, m.replica_id),
                                                           name=f"engine-start-{m.replica_id}")
            done, _ = await asyncio.wait({start}, timeout=self.start_timeout_s or None)
            if not done:
                m.state = "failed"
                m.reaper = asyncio.get_running_loop().create_task(self._reap(m, start))
                raise EngineStartError(f"engine did not start within {self.start_timeout_s} s", cause="timeout",
                                       replica_id=m.replica_id)
            replica = start.result()
            m.replica = replica
            self._record("start", m, True, "", t0)
            t1 = self.clock.now()
            await self._warm(replica)
            self._record("warm", m, True, f"{self.warmup_requests} requests", t1)
            m.state = "ready"
            self.router.add(replica)
            self._router_call("set_state", m.replica_id, "ready")
        except asyncio.CancelledError:
            m.state = "draining"
            if replica is None and start is not None:
                m.reaper = asyncio.get_running_loop().create_task(self._reap(m, start))
                await asyncio.shield(m.reaper)
            else:
                await self._discard(replica)
                self._replicas.pop(m.replica_id, None)
            self._record("cancel", m, True, "start cancelled: the new target does not need it", t0)
        except Exception as exc:  # noqa: BLE001 - any start/warm-up failure is reported, never raised
            if m.reaper is None:  # else the reaper stops the engine when its start ends
                await self._discard(replica)
                self._replicas.pop(m.replica_id, None)
            kind: StepKind = "warm" if replica is not None else "start"
            cause = getattr(exc, "cause", type(exc).__name__)
            self._record(kind, m, False, f"{cause}: {exc}", t0)
            log.warning("replica %s (%s on %s) failed to %s: %s", m.replica_id, m.placement.variant,
                        m.placement.node, kind, exc)

    async def _reap(self, m: ManagedReplica, start: asyncio.Task[Replica]) -> None:
        """Wait for an abandoned engine start to end, stop the engine, then forget the replica."""
        try:
            replica = await asyncio.shield(start)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the abandoned start failed: nothing runs
            log.info("abandoned start of replica %s ended with %r", m.replica_id, exc)
        else:
            await self._discard(replica)
        if self._replicas.get(m.replica_id) is m:
            del self._replicas[m.replica_id]
        m.reaper = None

    async def _discard(self, replica: Replica | None) -> None:
        if replica is None:
            return
        try:
            await asyncio.shield(asyncio.wait_for(replica.stop(), self.stop_timeout_s))
        except Exception as exc:  # noqa: BLE001 - best effort on a replica that never served
            log.warning("stopping replica %s after a failed start failed: %s", replica.replica_id, exc)

    async def _warm(self, replica: Replica) -> None:
        params = SamplingParams(max_tokens=self.warmup_max_tokens, temperature=0.0, ignore_eos=True)

        async def one(i: int) -> None:
            got = 0
            async for chunk in replica.generate(f"warmup-{replica.replica_id}-{i}", self.warmup_prompt, params):
                got += len(chunk.token_ids)
            if got == 0:
                raise EngineStartError(f"warm-up request {i} produced no token", cause="engine_error",
                                       replica_id=replica.replica_id)

        await asyncio.gather(*(one(i) for i in range(self.warmup_requests)))

    # ----------------------------------------------------------------- drains
    async def _drain_stop(self, rid: str, timeout_s: float) -> None:
        m = self._replicas.get(rid)
        if m is None:
            return
        t0 = self.clock.now()
        was_serving = m.state in ("ready", "draining")  # a drain cut short (cancelled) is drained again
        m.state = "draining"
        self._router_call("set_state", rid, "draining")
        self._refresh_routing()
        if m.replica is None:
            if m.reaper is not None:  # an abandoned engine start: wait until it is up and stopped
                await asyncio.shield(m.reaper)
            self._replicas.pop(rid, None)
            self._router_call("remove", rid)
            return
        if was_serving:
            try:
                aborted = await asyncio.wait_for(m.replica.drain(timeout_s), timeout_s + self.stop_timeout_s)
                self._aborted += int(aborted)
                self._record("drain", m, True, f"{aborted} requests aborted", t0)
            except Exception as exc:  # noqa: BLE001 - a failing drain is reported; the stop still runs
                self._record("drain", m, False, repr(exc), t0)
        t1 = self.clock.now()
        try:
            await asyncio.wait_for(m.replica.stop(), self.stop_timeout_s)
        except Exception as exc:  # noqa: BLE001 - reported; the replica stays as failed
            m.state = "failed"
            self._router_call("remove", rid)
            self._record("stop", m, False, repr(exc), t1)
            return
        self._replicas.pop(rid, None)
        self._router_call("remove", rid)
        self._record("stop", m, True, "", t1)

    # ----------------------------------------------------------------- routing and records
    def _refresh_routing(self, record: bool = False) -> bool:
        """Push the target routing restricted to ready variants; returns True if it changed."""
        ready = {m.placement.variant for m in self._replicas.values() if m.state == "ready"}
        new = effective_routing(self._target_routing, ready, self._routing)
        if new == self._routing:
            return False
        self._routing = new
        self._router_call("set_routing", new)
        if record:
            now = self.clock.now()
            self._steps.append(StepRecord("route", "", "", "", True, f"routing set for {len(new)} classes", now, now))
        return True

    def _router_call(self, name: str, *args: object) -> None:
        try:
            getattr(self.router, name)(*args)
        except KeyError:
            pass  # the router no longer knows the replica: nothing to do

    def _record(self, kind: StepKind, m: ManagedReplica, ok: bool, detail: str, t0: float) -> None:
        rec = StepRecord(kind, m.replica_id, m.placement.variant, m.placement.node, ok, detail, t0, self.clock.now())
        self._steps.append(rec)
        for cb in self.on_step:
            try:
                cb(rec)
            except Exception:  # noqa: BLE001 - an observer must not stop the switcher
                log.exception("on_step callback raised")
