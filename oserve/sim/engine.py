"""The discrete-event loop: a trace replayed on simulated replicas, controlled by the real control code.

Events are ``(time_s, priority, seq, kind, payload)`` tuples on a heap (Vidur and SimPy order events
the same way); ``seq`` is a per-run counter, so ties resolve in insertion order and a run is
deterministic. Arrivals are read from the sorted trace arrays instead of the heap. At equal times
the order is: replica ready, replica stopped / drain timeout, arrival, iteration end, control tick.

Per event kind:

* arrival: the request is classified, counted by the :class:`~oserve.monitor.WorkloadMonitor`
  (driven by a :class:`~oserve.clock.SimClock`, so snapshots come from the live code) and routed by
  :func:`oserve.router.choose_replica` (plan routing weights, least outstanding within a variant),
  or round-robin for plain static deployments. With no ready replica that fits, it is held until one
  is ready (and counted as touched by a switch); if no replica of the deployment could ever fit it,
  it is refused.
* iteration end: see :mod:`oserve.sim.replica` (one event per iteration, or per run of identical
  decode steps).
* control tick: :meth:`oserve.controller.Controller.tick` with the monitor's snapshot and history and
  the deployed plan; a changed plan goes to the simulated switcher (:mod:`oserve.sim.switching`).
* ready / stopped / drain timeout: switching events.
"""

from __future__ import annotations

import heapq
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from oserve.clock import SimClock
from oserve.controller import bin_history, placement_counts
from oserve.errors import ConfigError
from oserve.profiles.table import ProfileTable
from oserve.router import Candidate, choose_replica
from oserve.sim.replica import ReplicaParams, SimReplica
from oserve.sim.request import SimRequest
from oserve.sim.switching import SimDeployment
from oserve.types import DEFAULT_SCHEME, ClassScheme, ClusterSpec, Plan
from oserve.workload.trace import Trace

__all__ = ["SimOptions", "SimResult", "Simulation"]

_P_READY, _P_STOP, _P_ARRIVAL, _P_ITER, _P_TICK = 0, 1, 2, 3, 4


@dataclass(frozen=True)
class SimOptions:
    """Knobs of one simulation run.

    Attributes:
        control_interval_s: time between control ticks, seconds (oserve policy only).
        monitor_window_s: the monitor's snapshot window, seconds.
        history_bin_s: width of the rate-history bins handed to the controller, seconds.
        history_s: rate history kept by the monitor, seconds.
        drain_timeout_s: drain limit before in-flight requests are aborted, seconds.
        stop_time_s: engine stop time before its memory is free, seconds.
        warmup_s: warm-up added to each variant's ``start_time_s``, seconds.
        block_size: KV-cache block size, tokens.
        fast_forward: simulate runs of identical decode steps as one event (exact).
        sample_interval_s: period of the timeline samples (replicas, memory), seconds.
        progress: show a tqdm progress bar.
        record_controller_inputs: keep every tick's inputs in :attr:`SimResult.controller_inputs`.
    """

    control_interval_s: float = 30.0
    monitor_window_s: float = 30.0
    history_bin_s: float = 30.0
    history_s: float = 3600.0
    drain_timeout_s: float = 30.0
    stop_time_s: float = 5.0
    warmup_s: float = 0.0
    block_size: int = 16
    fast_forward: bool = True
    sample_interval_s: float = 10.0
    progress: bool = False
    record_controller_inputs: bool = False

    def __post_init__(self) -> None:
        for name in ("control_interval_s", "monitor_window_s", "history_bin_s", "sample_interval_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}", field=name, allowed="> 0 s")
        for name in ("drain_timeout_s", "stop_time_s", "warmup_s"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}", field=name, allowed=">= 0 s")
        if self.history_s < self.monitor_window_s:
            raise ConfigError("history_s must be >= monitor_window_s", field="history_s",
                              allowed=f">= {self.monitor_window_s} s")


@dataclass
class SimResult:
    """What one run produced.

    Attributes:
        policy: policy label.
        requests: per-request records (see :data:`oserve.sim.request.RECORD_FIELDS`).
        decisions: the controller's decisions (``Decision.to_dict()``), oldest first.
        transitions: switch records (``Transition.to_dict()``).
        timeline: samples ``{"time_s", "replicas": {variant: ready count}, "starting", "draining",
            "memory_reserved_bytes", "memory_used_bytes", "in_system"}`` (``in_system``: requests
            queued, running or held, sampled before the event at that time).
        total_memory_bytes: memory of all devices of the cluster.
        duration_s: last arrival time of the trace, seconds.
        end_s: time of the last event, seconds.
        events: events processed (arrivals included).
        wall_s: wall-clock time of the run, seconds.
        iterations: replica iterations simulated (a fast-forwarded run counts once).
        class_names: the scheme's class names.
        initial_plan: the deployment at time 0 (``Plan.model_dump``).
        controller_inputs: with ``record_controller_inputs``: per tick ``{"now_s", "snapshot",
            "history_ts", "history_rates", "current"}`` exactly as passed to ``Controller.tick``.
    """

    policy: str
    requests: list[dict[str, Any]]
    decisions: list[dict[str, Any]] = field(default_factory=list)
    transitions: list[dict[str, Any]] = field(default_factory=list)
    timeline: list[dict[str, Any]] = field(default_factory=list)
    total_memory_bytes: int = 0
    duration_s: float = 0.0
    end_s: float = 0.0
    events: int = 0
    wall_s: float = 0.0
    iterations: int = 0
    class_names: list[str] = field(default_factory=list)
    initial_plan: dict[str, Any] = field(default_factory=dict)
    controller_inputs: list[dict[str, Any]] = field(default_factory=list)


class Simulation:
    """One trace on one cluster under one policy.

    Args:
        trace: the requests (``arrival_s`` sorted).
        table: the profile table (only the variants the plans name need iteration models).
        cluster: the cluster.
        initial_plan: the deployment at time 0 (already running: no start cost).
        controller: an :class:`oserve.controller.Controller`, or None for a static deployment.
        routing: ``"plan"`` (the router's choice function with the plan's weights) or
            ``"round-robin"`` (over the ready replicas that fit).
        scheme: request classes.
        options: see :class:`SimOptions`.
        policy: label for the result.
        seed: reserved for stochastic extensions; the run itself is deterministic.

    Raises:
        ConfigError: unknown routing mode or a plan naming a variant the table lacks.
    """

    def __init__(self, trace: Trace, table: ProfileTable, cluster: ClusterSpec, initial_plan: Plan, *,
                 controller: Any | None = None, routing: str = "plan", scheme: ClassScheme = DEFAULT_SCHEME,
                 options: SimOptions | None = None, policy: str = "sim", seed: int = 0) -> None:
        if routing not in ("plan", "round-robin"):
            raise ConfigError(f"unknown routing {routing!r}", field="routing", allowed="plan, round-robin")
        self.trace = trace
        self.table = table
        self.cluster = cluster
        self.initial_plan = initial_plan
        self.controller = controller
        self.routing_mode = routing
        self.scheme = scheme
        self.options = options or SimOptions()
        self.policy = policy
        self.rng = np.random.default_rng(seed)
        self.params = {
            name: ReplicaParams.from_profile(v, block_size=self.options.block_size)
            for name, v in table.variants.items() if v.kv_bytes_per_token > 0
        }
        for p in initial_plan.replicas:
            if p.variant not in self.params:
                raise ConfigError(f"plan names variant {p.variant!r} absent from the table",
                                  field="plan.replicas.variant", allowed=", ".join(sorted(self.params)))

    # ------------------------------------------------------------------ run
    def run(self) -> SimResult:
        """Simulate the whole trace until every request has finished, been aborted or refused."""
        from oserve.monitor import WorkloadMonitor

        t_wall = time.perf_counter()
        opt = self.options
        tr = self.trace
        n = len(tr)
        arrival = np.asarray(tr.arrival_s, dtype=np.float64)
        inp = np.asarray(tr.input_tokens, dtype=np.int64)
        out = np.asarray(tr.output_tokens, dtype=np.int64)
        cls_idx = self.scheme.classify_many(inp, out)
        classes = self.scheme.classes
        names = self.scheme.names
        source = tr.source if tr.source is not None else None
        arr_list = arrival.tolist()
        duration = float(arrival[-1]) if n else 0.0

        clock = SimClock(0.0)
        monitor = WorkloadMonitor(self.scheme, clock, window_s=opt.monitor_window_s, history_s=opt.history_s)
        heap: list[tuple[float, int, int, str, Any]] = []
        seq = 0

        def push(t: float, prio: int, kind: str, payload: Any) -> None:
            nonlocal seq
            seq += 1
            heapq.heappush(heap, (t, prio, seq, kind, payload))

        def schedule(t: float, kind: str, r: SimReplica) -> None:
            prio = _P_READY if kind == "ready" else _P_STOP
            push(t, prio, kind, (r, r.version))

        def on_drain(r: SimReplica, now: float) -> None:
            for q in r.running:
                q.touched = True
            for q in r.waiting:
                q.touched = True

        def on_abort(r: SimReplica, now: float) -> int:
            left = r.remove_all()
            for q in left:
                q.aborted = True
                q.touched = True
                monitor.record_completion(str(q.rid), q.generated, False)
            return len(left)

        dep = SimDeployment(self.cluster, self.table, self.params, schedule, on_drain, on_abort,
                            drain_timeout_s=opt.drain_timeout_s, stop_time_s=opt.stop_time_s,
                            warmup_s=opt.warmup_s, fast_forward=opt.fast_forward)
        dep.deploy_ready(self.initial_plan, 0.0)
        last_target: Plan = self.initial_plan
        held: deque[SimRequest] = deque()
        credit: dict[str, dict[str, float]] = {}
        served: dict[str, int] = {}
        rr_next = 0
        requests: list[SimRequest] = []
        decisions: list[dict[str, Any]] = []
        ctl_inputs: list[dict[str, Any]] = []
        timeline: list[dict[str, Any]] = []
        events = 0
        iterations = 0

        if self.controller is not None and n:
            t = opt.control_interval_s
            while t <= duration + 1e-9:
                push(t, _P_TICK, "tick", None)
                t += opt.control_interval_s

        def start(r: SimReplica, now: float) -> None:
            nonlocal iterations
            end = r.start_iteration(now)
            if end is not None:
                iterations += 1
                push(end, _P_ITER, "iter", (r, r.version))

        def dispatch(q: SimRequest, now: float) -> bool:
            """Route one request; False if no ready replica fits it (caller holds or refuses it)."""
            nonlocal rr_next
            need = q.input_tokens + q.output_tokens
            serving = dep.serving()
            if self.routing_mode == "round-robin":
                fits = [r for r in serving if need <= r.max_tokens]
                if not fits:
                    return False
                r = fits[rr_next % len(fits)]
                rr_next += 1
            else:
                cands = [Candidate(r.replica_id, r.variant, r.max_tokens) for r in serving]
                if not cands:
                    return False
                cname = names[q.cls]
                routing = dep.routing
                outstanding = {r.replica_id: r.outstanding for r in serving}
                ch = choose_replica(cands, outstanding, needed_tokens=need, weights=routing.get(cname),
                                    credit=credit.get(cname), served=served, routing_active=bool(routing))
                if ch.replica_id is None:
                    return False
                if ch.credit is not None:
                    credit[cname] = ch.credit
                r = dep.replicas[ch.replica_id]
            served[r.replica_id] = served.get(r.replica_id, 0) + 1
            r.add(q)
            if not r.busy:
                start(r, now)
            else:
                cut = r.cut(now)
                if cut is not None:
                    push(cut, _P_ITER, "iter", (r, r.version))
            return True

        def could_ever_fit(q: SimRequest) -> bool:
            pool = [self.params[p.variant] for p in last_target.replicas] + [r.params for r in dep.replicas.values()]
            return any(p.fits(q) for p in pool)

        def release_held(r: SimReplica, now: float) -> None:
            for _ in range(len(held)):
                q = held.popleft()
                if not dispatch(q, now):
                    held.append(q)

        dep.on_ready = release_held

        next_sample = 0.0
        pbar = None
        if opt.progress:
            from tqdm import tqdm

            pbar = tqdm(total=n, unit="req", desc=f"simulate {self.policy}", leave=False)
        ai = 0
        inf = math.inf
        while True:
            t_arr = arr_list[ai] if ai < n else inf
            if heap and (heap[0][0] < t_arr or (heap[0][0] == t_arr and heap[0][1] < _P_ARRIVAL)):
                t, _, _, kind, payload = heapq.heappop(heap)
                is_arrival = False
            elif ai < n:
                t = t_arr
                kind = "arrival"
                is_arrival = True
            else:
                break
            events += 1
            while t >= next_sample:
                timeline.append(self._sample(next_sample, dep, len(held)))
                next_sample += opt.sample_interval_s
            clock.advance_to(t)
            if is_arrival:
                i = ai
                ai += 1
                c = int(cls_idx[i])
                q = SimRequest(i, t, int(inp[i]), int(out[i]), c, str(source[i]) if source is not None else "")
                requests.append(q)
                monitor.record_admission(str(i), classes[c], q.input_tokens, q.output_tokens)
                if not dispatch(q, t):
                    if could_ever_fit(q):
                        q.touched = True
                        held.append(q)
                    else:
                        q.refused = True
                        monitor.record_completion(str(i), 0, False)
                if pbar is not None and ai % 1000 == 0:
                    pbar.update(1000)
                continue
            if kind == "iter":
                r, ver = payload
                if ver != r.version or not r.busy or t != r.end_time():
                    continue
                res = r.finish_iteration(t)
                for q in res.first_tokens:
                    monitor.record_first_token(str(q.rid))
                for q in res.finished:
                    if q.first_token_s is None:  # pragma: no cover - a finished request has a first token
                        q.first_token_s = t
                    monitor.record_completion(str(q.rid), q.generated, True)
                if r.outstanding:
                    start(r, t)
                elif r.state == "draining":
                    dep.maybe_stop(r, t)
            elif kind == "tick":
                # as Orchestrator._decide: binned monitor history; the plan to compare with is the
                # switcher's target in progress, else the last target if the replicas match it,
                # else the real deployment
                snap = monitor.snapshot()
                hts, hrates = bin_history(*monitor.rate_history(), opt.history_bin_s)
                current = dep.target
                if current is None:
                    actual = dep.actual_plan()
                    current = last_target if placement_counts(actual) == placement_counts(last_target) else actual
                if opt.record_controller_inputs:
                    ctl_inputs.append({"now_s": t, "snapshot": snap, "history_ts": hts.copy(),
                                       "history_rates": hrates.copy(), "current": current})
                d = self.controller.tick(t, snap, hts, hrates, current)
                if d.changed:
                    dep.submit(d.plan, t)
                    last_target = d.plan
                    decisions.append(d.to_dict())
                else:
                    rec = getattr(self.controller, "record_outcome", None)
                    decisions.append((rec(d, "unchanged") if rec is not None else d).to_dict())
            else:
                r, ver = payload
                if kind == "ready":
                    if ver == r.version:
                        dep.replica_ready(r, t)
                elif kind == "stopped":
                    dep.replica_stopped(r, t)
                elif kind == "drain_timeout":
                    dep.drain_timeout(r, t)
        if pbar is not None:
            pbar.update(n - pbar.n)
            pbar.close()
        end_s = clock.now()
        timeline.append(self._sample(end_s, dep, len(held)))
        for q in held:  # nothing ever became ready for them
            q.aborted = True
        return SimResult(
            policy=self.policy,
            requests=[q.record() for q in requests],
            decisions=decisions,
            transitions=[tr_.to_dict() for tr_ in dep.transitions],
            timeline=timeline,
            total_memory_bytes=dep.total_memory_bytes,
            duration_s=duration,
            end_s=end_s,
            events=events,
            wall_s=time.perf_counter() - t_wall,
            iterations=iterations,
            class_names=list(names),
            initial_plan=self.initial_plan.model_dump(mode="json"),
            controller_inputs=ctl_inputs,
        )

    @staticmethod
    def _sample(t: float, dep: SimDeployment, held: int) -> dict[str, Any]:
        counts: dict[str, int] = {}
        starting = draining = 0
        used = 0
        in_system = held
        for r in dep.replicas.values():
            in_system += r.outstanding
            if r.state == "ready":
                counts[r.variant] = counts.get(r.variant, 0) + 1
            elif r.state == "starting":
                starting += 1
            elif r.state in ("draining", "stopping"):
                draining += 1
            if r.state in ("ready", "draining", "stopping"):
                used += r.params.weights_bytes + r.used_kv_tokens * r.params.kv_bytes_per_token
            elif r.state == "starting":
                used += r.params.weights_bytes
        return {"time_s": t, "replicas": counts, "starting": starting, "draining": draining,
                "memory_reserved_bytes": dep.memory_in_use_bytes, "memory_used_bytes": used, "in_system": in_system}
