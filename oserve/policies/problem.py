"""The planning problem as arrays: what every planner solves (public: a custom planner's ``_allocate`` receives one).

Nodes with the same device type, device count and device memory form a *node group*. When the
replica sizes (devices per replica) of the variants that fit a group form a divisibility chain
(1, 2, 4, 8 on 8-GPU nodes), any per-variant replica counts whose devices sum to at most the
group's devices can be packed onto its nodes with every replica on aligned contiguous devices of
one node (first-fit decreasing on divisible sizes is exact), so planners decide counts per
(variant, group) only. Otherwise the group is split into one group per node.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from oserve.errors import ConfigError
from oserve.profiles.table import ProfileTable
from oserve.types import ClusterSpec, Demand, Plan

__all__ = ["ObjectiveWeights", "NodeGroup", "Problem", "build_problem", "mix_capacity", "headroom_shares",
           "planned_capacity", "pooled_headroom", "validate_min_quality"]


class ObjectiveWeights(BaseModel):
    """Weights of the shared planning objective (see :func:`oserve.policies.evaluate.evaluate`).

    objective = goodput_rps - quality_cost_rps * sum over served req/s of (1 - quality score of the variant
    serving it) + spare_capacity_value * planned capacity for the demand mix (req/s, only
    with ``fill_idle_devices``) - switch_cost_rps_per_s * (start time of replicas started or stopped, s)
    - device_cost_rps * devices used (only without ``fill_idle_devices``).

    Every capacity the objective uses is ``target_utilization * capacity_rps`` of the profile table:
    the planner keeps ``1 - target_utilization`` of each replica's SLO-constrained capacity as
    headroom for burstiness and for the error of the table (the way Dynamo's SLA planner and Ray
    Serve's autoscaler plan to a target utilization, not to 100 %). Default 0.7, from
    ``bench/results/sim_capacity_check.json``: one simulated A100 replica offered 100 % of its table
    capacity met the SLO for 0-98 % of requests depending on variant and class; offered 70 % it met
    it for 82-100 %.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    switch_cost_rps_per_s: float = Field(
        1e-4, ge=0, description="objective cost (req/s) per second of start time of a replica started or stopped")
    device_cost_rps: float = Field(
        1e-3, ge=0, description="objective cost (req/s) per device used; applies only when fill_idle_devices is "
                                "False (then devices no replica needs are freed, e.g. to save energy)")
    target_utilization: float = Field(
        0.7, gt=0, le=1, description="fraction of a replica's table capacity_rps the planner plans to use "
                                     "(headroom 1 - target_utilization); source: bench/results/sim_capacity_check.json")
    fill_idle_devices: bool = Field(
        True, description="when demand is met, idle devices still host replicas (more capacity, less queueing); "
                          "False frees them (energy saving) and charges device_cost_rps per device instead")
    spare_capacity_value: float = Field(
        5e-3, ge=0, lt=1, description="objective value (req/s) per req/s of planned capacity for the current "
                                      "demand mix, with fill_idle_devices; below 1 so goodput always dominates, "
                                      "large enough to pay for starting a spare replica (switch cost)")
    quality_cost_rps: float = Field(
        0.5, ge=0, lt=1, description="objective cost per req/s served by a variant, times its quality shortfall "
                                     "(1 - quality score of the profile table); below 1 so goodput dominates, "
                                     "above device_cost_rps / typical shortfall so quality beats saving a device")


def mix_capacity(cap: np.ndarray, demand: np.ndarray) -> np.ndarray:
    """Capacity of one replica of each variant for the demand mix, req/s (V,).

    ``cap`` is (V, C) req/s (already scaled by the target utilization), ``demand`` (C,) req/s. A replica
    of ``v`` serving the mix restricted to the classes it can serve, in proportion to their demand,
    sustains ``D_v / sum_c (d_c / cap[v, c])`` req/s, where ``D_v`` is the demand of those classes; the
    result is weighted by ``D_v / D`` (the share of the mix it can serve). Zero demand counts every
    class equally.
    """
    d = np.asarray(demand, dtype=float)
    if d.sum() <= 0:
        d = np.ones(cap.shape[1])
    can = cap > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        time = np.where(can, d[None, :] / np.where(can, cap, 1.0), 0.0).sum(axis=1)
    covered = np.where(can, d[None, :], 0.0).sum(axis=1)
    return np.where(time > 0, covered / np.maximum(time, 1e-300) * covered / d.sum(), 0.0)


_MIN_SHARE = 1e-6


def headroom_shares(cap: np.ndarray, demand: np.ndarray) -> np.ndarray:
    """The demand mix whose headroom :func:`planned_capacity` measures, as shares summing to 1 (C,).

    ``demand`` (C,) req/s restricted to the classes some variant of ``cap`` (V, C) can serve (a class no
    variant serves would make every plan's headroom 0); zero demand counts those classes equally.
    All zeros when no class can be served, or when all demand is for classes no variant serves (then
    no replica adds capacity for the demand, as :func:`mix_capacity`). Classes under 1 ppm of the mix are
    left out.
    """
    d = np.asarray(demand, dtype=float)
    servable = (np.asarray(cap) > 0).any(axis=0)
    if d.sum() <= 0:
        d = servable.astype(float)
    d = np.where(servable, d, 0.0)
    total = d.sum()
    if total <= 0:
        return d
    # a class below 1 ppm of the mix does not limit the headroom: its constraint would be under the
    # solver's feasibility tolerance (1e-7), so the MILP and the scoring would disagree about it
    d = np.where(d / total >= _MIN_SHARE, d, 0.0)
    return d / d.sum()


def planned_capacity(cap: np.ndarray, demand: np.ndarray, replicas: np.ndarray) -> float:
    """Largest rate of the demand mix that ``replicas`` can carry together, req/s (the plan's headroom).

    ``cap`` (V, C) one replica's planning capacity, req/s; ``demand`` (C,) req/s (only its mix matters,
    :func:`headroom_shares`); ``replicas`` (V,). Solves the LP ``max R`` s.t. every class ``c`` gets
    ``R * share[c]`` req/s from the variants that can serve it and no variant spends more than its
    replicas' time (``sum_c x[c, v] / cap[v, c] <= replicas[v]``). Unlike summing each replica's
    :func:`mix_capacity`, this counts a class's bottleneck once: replicas that cannot serve the class that
    limits the mix add no headroom for it (a plan of replicas that skip the long-prompt class and one
    replica that serves it carries little more of the mix than that one replica does).
    """
    from scipy.optimize import linprog

    cap = np.asarray(cap, dtype=float)
    reps = np.asarray(replicas, dtype=float)
    share = headroom_shares(cap, demand)
    V, C = cap.shape
    pairs = [(c, v) for v in range(V) if reps[v] > 0 for c in range(C) if cap[v, c] > 0 and share[c] > 0]
    if not pairs:
        return 0.0
    if any(not any(cc == c for cc, _ in pairs) for c in range(C) if share[c] > 0):
        return 0.0  # a class of the mix that none of these replicas serves: the mix cannot be carried at all
    P = len(pairs)
    # Variables y[k] = x / cap (replica time) and R; maximise R.
    A = np.zeros((V + C, P + 1))
    for k, (c, v) in enumerate(pairs):
        A[v, k] = 1.0
        A[V + c, k] = -cap[v, c]
    A[V:, P] = share
    b = np.concatenate([reps, np.zeros(C)])
    cost = np.zeros(P + 1)
    cost[P] = -1.0
    res = linprog(cost, A_ub=A, b_ub=b, bounds=(0, None), method="highs")
    if res.status != 0 or res.x is None:
        return 0.0
    return max(0.0, float(res.x[P]))


def pooled_headroom(cap: np.ndarray, demand: np.ndarray, replicas: np.ndarray) -> float:
    """Largest rate of the demand mix that ``replicas`` (V,) carry with pooled routing, req/s.

    Pooled routing sends every class to every replica that serves it in proportion to its capacity
    (:mod:`oserve.policies.pooling`); each variant's utilization is then ``R * sum_{c it serves} share[c] / K[c]``
    with ``K[c] = sum_v replicas[v] * cap[v, c]``, so ``R = 1 / max_v sum_{c it serves} share[c] / K[c]``. At
    most :func:`planned_capacity` (the best routing), equal to it when every variant serves every class in
    the same proportions.

    ``cap`` (V, C) one replica's planning capacity, req/s; ``demand`` (C,) req/s (only its mix,
    :func:`oserve.policies.problem.headroom_shares`). 0 when a class of the mix has no replica.
    """
    cap = np.asarray(cap, dtype=float)
    reps = np.asarray(replicas, dtype=float)
    share = headroom_shares(cap, demand)
    pooled = (cap * reps[:, None]).sum(axis=0)  # K[c], req/s
    need = share > 0
    if not need.any() or np.any(pooled[need] <= 0):
        return 0.0
    per_rate = np.where(need, share / np.where(pooled > 0, pooled, 1.0), 0.0)  # utilization per req/s of the mix
    load = ((cap > 0) & (reps[:, None] > 0)) @ per_rate  # (V,)
    top = float(load.max(initial=0.0))
    return 1.0 / top if top > 0 else 0.0


@dataclass(frozen=True)
class NodeGroup:
    """Nodes treated as one pool of devices (identical nodes, divisible replica sizes) or one node."""

    nodes: tuple[str, ...]
    device_type: str
    devices_per_node: int
    device_memory_bytes: int

    @property
    def devices(self) -> int:
        """Devices in the whole group."""
        return self.devices_per_node * len(self.nodes)


@dataclass(frozen=True)
class Problem:
    """Arrays of one planning instance. V variants, C classes, G node groups.

    Attributes:
        variants: variant names, sorted (V,).
        classes: class names in table order (C,).
        cap: ``cap[v, c]`` one replica's planning capacity, req/s (V, C): the table's ``capacity_rps``
            times ``weights.target_utilization``.
        dev: devices per replica (V,).
        mem: memory per device, bytes (V,).
        start_s: replica start time, s (V,).
        groups: node groups (G,).
        fits: ``fits[v, g]`` variant may run on the group (device type, memory, devices) (V, G).
        demand: per-class demand, req/s (C,).
        current: replicas of ``current`` per (variant, group) (V, G).
        weights: objective weights.
        unfit: variant -> why it fits no node (only variants that fit nowhere).
        has_current: whether a current plan was given; without one nothing is switched, so (as in
            ``evaluate``) starting replicas costs nothing.
        cluster / table / demand_spec / current_plan: the inputs the problem was built from (set by
            :func:`build_problem`), for planners that score whole plans (e.g. the hysteresis wrapper).
        quality: quality score of each variant, 0-1 (V,) (the table's ``quality_score``; None: all 1).
            A class's ``min_quality`` (in the demand) has already zeroed ``cap`` of the variants below it.
    """

    variants: tuple[str, ...]
    classes: tuple[str, ...]
    cap: np.ndarray
    dev: np.ndarray
    mem: np.ndarray
    start_s: np.ndarray
    groups: tuple[NodeGroup, ...]
    fits: np.ndarray
    demand: np.ndarray
    current: np.ndarray
    weights: ObjectiveWeights
    unfit: dict[str, str] = field(default_factory=dict)
    has_current: bool = True
    cluster: ClusterSpec | None = None
    table: ProfileTable | None = None
    demand_spec: Demand | None = None
    current_plan: Plan | None = None
    quality: np.ndarray | None = None

    @property
    def switch_cost(self) -> float:
        """Objective cost per second of start time of a replica started or stopped, req/s/s (0 without ``current``)."""
        return self.weights.switch_cost_rps_per_s if self.has_current else 0.0

    @property
    def group_devices(self) -> np.ndarray:
        """Devices per group (G,)."""
        return np.array([g.devices for g in self.groups], dtype=np.int64)

    def max_replicas(self) -> np.ndarray:
        """Upper bound on replicas per (variant, group) (V, G); 0 where the variant does not fit."""
        per_node = np.array([[g.devices_per_node // int(d) for g in self.groups] for d in self.dev], dtype=np.int64)
        n_nodes = np.array([len(g.nodes) for g in self.groups], dtype=np.int64)
        return np.where(self.fits, per_node * n_nodes[None, :], 0)

    def mix_capacity(self) -> np.ndarray:
        """Capacity of one replica of each variant for this demand's mix, req/s (V,); see :func:`mix_capacity`."""
        return mix_capacity(self.cap, self.demand)

    def planned_capacity(self, replicas: np.ndarray) -> float:
        """Planned capacity of ``replicas`` (V,) for this demand's mix over the usable classes, req/s: the
        headroom with pooled routing (:func:`pooled_headroom`), as :func:`oserve.policies.evaluate.evaluate`
        scores it."""
        return pooled_headroom(np.where(self.usable(), self.cap, 0.0), self.demand, replicas)

    def served_value(self) -> np.ndarray:
        """Objective value of one req/s of class ``c`` served by variant ``v``, req/s (C, V):
        ``1 - quality_cost_rps * (1 - quality[v])``."""
        q = np.ones(len(self.variants)) if self.quality is None else np.asarray(self.quality, dtype=float)
        return np.broadcast_to(1.0 - self.weights.quality_cost_rps * (1.0 - q), (len(self.classes), len(q)))

    def usable(self) -> np.ndarray:
        """``usable[v, c]``: variant can be placed somewhere and has capacity for the class (V, C)."""
        return (self.cap > 0) & self.fits.any(axis=1)[:, None]


def validate_demand(table: ProfileTable, demand: Demand) -> np.ndarray:
    """Per-class demand array in table class order (C,), req/s; classes absent from ``demand`` are 0.

    Raises:
        ConfigError: a class the table does not know, or a negative / non-finite rate.
    """
    out = np.zeros(len(table.class_names))
    index = {c: i for i, c in enumerate(table.class_names)}
    for c, r in demand.rates_rps.items():
        if c not in index:
            raise ConfigError(f"demand names unknown class {c!r}", field=f"demand.{c}",
                              allowed=", ".join(table.class_names))
        if not np.isfinite(r) or r < 0:
            raise ConfigError(f"demand rate for {c!r} must be a finite number >= 0 req/s, got {r}",
                              field=f"demand.{c}", allowed=">= 0 req/s")
        out[index[c]] = float(r)
    return out


def validate_min_quality(table: ProfileTable, demand: Demand) -> np.ndarray:
    """Per-class minimum quality score in table class order (C,), 0-1; classes absent from it are 0.

    Raises:
        ConfigError: a class the table does not know (field ``demand.min_quality.<class>``).
    """
    out = np.zeros(len(table.class_names))
    index = {c: i for i, c in enumerate(table.class_names)}
    for c, q in demand.min_quality.items():
        if c not in index:
            raise ConfigError(f"min_quality names unknown class {c!r}", field=f"demand.min_quality.{c}",
                              allowed=", ".join(table.class_names))
        out[index[c]] = float(q)
    return out


def chain(sizes: list[int], devices: int) -> bool:
    """True when the distinct sizes each divide the next and the largest divides ``devices``."""
    s = sorted(set(sizes))
    return all(b % a == 0 for a, b in zip(s, s[1:], strict=False)) and (not s or devices % s[-1] == 0)


def build_problem(cluster: ClusterSpec, table: ProfileTable, demand: Demand, current: Plan | None,
                  weights: ObjectiveWeights) -> Problem:
    """Turn the inputs into a :class:`Problem`.

    Raises:
        ConfigError: invalid demand (see :func:`validate_demand`), duplicate node names.
    """
    names = [n.name for n in cluster.nodes]
    if len(set(names)) != len(names):
        raise ConfigError("cluster node names must be unique", field="cluster.nodes.name", allowed="unique names")
    variants = tuple(sorted(table.variants))
    classes = tuple(table.class_names)
    vp = [table.variants[v] for v in variants]
    cap = np.array([[p.classes[c].capacity_rps if c in p.classes else 0.0 for c in classes] for p in vp],
                   dtype=float).reshape(len(vp), len(classes)) * weights.target_utilization
    quality = np.array([p.quality_score for p in vp], dtype=float)
    # A variant below a class's minimum quality gets no traffic of that class.
    cap = np.where(quality[:, None] + 1e-12 < validate_min_quality(table, demand)[None, :], 0.0, cap)
    dev = np.array([p.devices_per_replica for p in vp], dtype=np.int64)
    mem = np.array([p.memory_per_device_bytes for p in vp], dtype=np.int64)
    start_s = np.array([p.start_time_s for p in vp], dtype=float)

    # Group identical nodes, keeping cluster order.
    buckets: dict[tuple[str, int, int], list[str]] = {}
    for n in cluster.nodes:
        buckets.setdefault((n.device_type, n.devices, n.device_memory_bytes), []).append(n.name)
    groups: list[NodeGroup] = []
    for (dtype, ndev, nmem), nodes in buckets.items():
        sizes = [int(p.devices_per_replica) for p in vp if _fits(p.device_type, p.memory_per_device_bytes,
                                                                  p.devices_per_replica, dtype, nmem, ndev)]
        if chain(sizes, ndev):
            groups.append(NodeGroup(tuple(nodes), dtype, ndev, nmem))
        else:
            groups.extend(NodeGroup((n,), dtype, ndev, nmem) for n in nodes)
    fits = np.array([[_fits(p.device_type, p.memory_per_device_bytes, p.devices_per_replica, g.device_type,
                            g.device_memory_bytes, g.devices_per_node) for g in groups] for p in vp], dtype=bool)
    fits = fits.reshape(len(variants), len(groups))
    unfit: dict[str, str] = {}
    for i, p in enumerate(vp):
        if not fits[i].any():
            same = [g for g in groups if g.device_type == p.device_type]
            if not same:
                unfit[p.name] = f"no {p.device_type} node"
            elif all(p.memory_per_device_bytes > g.device_memory_bytes for g in same):
                best = max(g.device_memory_bytes for g in same)
                unfit[p.name] = (f"memory: needs {p.memory_per_device_bytes / 2**30:.1f} GiB per device, "
                                 f"largest device has {best / 2**30:.1f} GiB")
            else:
                unfit[p.name] = f"devices: needs {p.devices_per_replica} devices on one node"

    cur = np.zeros((len(variants), len(groups)), dtype=np.int64)
    if current is not None:
        vi = {v: i for i, v in enumerate(variants)}
        gi = {n: j for j, g in enumerate(groups) for n in g.nodes}
        for r in current.replicas:
            if r.variant in vi and r.node in gi:
                cur[vi[r.variant], gi[r.node]] += 1
    return Problem(variants=variants, classes=classes, cap=cap, dev=dev, mem=mem, start_s=start_s,
                   groups=tuple(groups), fits=fits, demand=validate_demand(table, demand), current=cur,
                   weights=weights, unfit=unfit, has_current=current is not None, cluster=cluster, table=table,
                   demand_spec=demand, current_plan=current, quality=quality)


def _fits(v_type: str, v_mem: int, v_dev: int, n_type: str, n_mem: int, n_dev: int) -> bool:
    return v_type == n_type and v_mem <= n_mem and v_dev <= n_dev
