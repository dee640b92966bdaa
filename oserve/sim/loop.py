"""One simulation run: the event loop, with events as data dispatched to methods.

:class:`SimRun` holds the state of one run of :class:`oserve.sim.engine.Simulation` and processes
the events of :mod:`oserve.sim.events` in order:

* arrival: the request is classified, counted by the :class:`~oserve.workload.monitor.WorkloadMonitor`
  (driven by the simulated clock, so snapshots come from the live code) and routed by
  :func:`oserve.policies.routing.choose_replica` (plan routing weights, least loaded within a
  variant: ``SimOptions.replica_load``, pending prefill tokens first by default), or round-robin for plain static deployments. As in the live router
  (:mod:`oserve.server.router`), with ``router_queue`` each replica takes at most ``max_num_seqs``
  requests at once (:func:`oserve.policies.routing.open_candidates`): when every fitting ready
  replica is full the request waits in the router-side queue (:attr:`SimRun.held`, FIFO) and is
  dispatched when a replica frees a slot or becomes ready. With no ready replica that fits, it is
  held until one is ready (and counted as touched by a switch); if no replica of the deployment
  could ever fit it, it is refused.
* iteration end: see :mod:`oserve.sim.replica` (one event per iteration, or per run of identical
  decode steps).
* control tick: :meth:`oserve.control.controller.Controller.tick` with the monitor's snapshot and
  history and the planning base (:func:`oserve.control.rules.planning_base`, the live rule); a
  changed plan is submitted to the real :class:`~oserve.control.switcher.Switcher`.
* ready / stopped / drain timeout / timer: the simulated backend's and clock's events
  (:mod:`oserve.sim.backend`); each wakes a coroutine of the switcher.

The switcher's coroutines run on an asyncio event loop whose only waits are on these events: after
an event wakes one, the loop runs until every coroutine waits again (:meth:`SimRun._settle`) before
the next event, so the run stays deterministic.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from typing import TYPE_CHECKING, Any

import numpy as np

from oserve.control.controller import bin_history
from oserve.control.records import SwitchResult
from oserve.control.resources import ResourceModel
from oserve.control.rules import planning_base
from oserve.control.surge import FlooredSnapshot, QuietAfter, SurgeRule, check_surge, window_rates
from oserve.control.switcher import Switcher
from oserve.control.targets import TargetTracker
from oserve.policies.routing import Candidate, choose_replica, open_candidates
from oserve.sim.backend import SimBackend, SimRouterPort
from oserve.sim.clock import EventClock
from oserve.sim.contention import ContentionModel
from oserve.sim.events import EventKind, EventQueue, Priority
from oserve.sim.replica import SimReplica
from oserve.sim.request import SimRequest
from oserve.types import Plan
from oserve.workload.monitor import WorkloadMonitor

if TYPE_CHECKING:
    from oserve.sim.engine import Simulation

__all__ = ["SimRun", "transition_record"]


def transition_record(result: SwitchResult, submitted_s: float) -> dict[str, Any]:
    """A switch record of the simulator's result from the switcher's :class:`SwitchResult`.

    Keys: ``submitted_s`` (when the decision asked for it), ``started_s`` / ``finished_s`` (the
    transition), ``status``, ``make_before_break``, ``started`` (replica starts begun, cancelled
    ones included), ``drained``, ``cancelled``, ``skipped`` (drains skipped: they would have left a
    class without capacity), ``aborted_requests``, ``migrated_requests`` and ``duration_s`` (decision to new configuration
    in place, seconds).
    """
    kinds = [s.kind for s in result.steps]
    return {
        "submitted_s": submitted_s, "started_s": result.started_s, "finished_s": result.finished_s,
        "status": result.status, "make_before_break": result.make_before_break,
        "started": kinds.count("start") + kinds.count("cancel"), "drained": kinds.count("drain"),
        "cancelled": kinds.count("cancel"),
        "skipped": sum(s.kind == "skip" and s.detail.startswith("drain skipped") for s in result.steps),
        "aborted_requests": result.aborted_requests, "migrated_requests": result.migrated_requests,
        "duration_s": result.finished_s - submitted_s,
    }


class SimRun:
    """The state of one run (see the module docstring). Use :meth:`run` once.

    Args:
        sim: the simulation's set-up (trace, table, cluster, plan, controller, options).
    """

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        opt = self.opt = sim.options
        tr = sim.trace
        self.n = len(tr)
        arrival = np.asarray(tr.arrival_s, dtype=np.float64)
        self.inp = np.asarray(tr.input_tokens, dtype=np.int64)
        self.out = np.asarray(tr.output_tokens, dtype=np.int64)
        self.cls_idx = sim.scheme.classify_many(self.inp, self.out)
        self.classes = sim.scheme.classes
        self.names = sim.scheme.names
        self.source = tr.source
        self.arr_list = arrival.tolist()
        self.duration = float(arrival[-1]) if self.n else 0.0

        self.events = EventQueue()
        self.clock = EventClock(self.events, self._woke)
        self.monitor = WorkloadMonitor(sim.scheme, self.clock, window_s=opt.monitor_window_s, history_s=opt.history_s)
        self.backend = SimBackend(sim.params, self.events, self.clock, self._on_drain, self._on_abort, self._woke,
                                  stop_time_s=opt.stop_time_s, warmup_s=opt.warmup_s, fast_forward=opt.fast_forward)
        self.backend.on_change = self._changed
        self.port = SimRouterPort(self._release_held, self._changed)
        self.switcher = Switcher(self.backend, self.port, self.backend.spec_for,
                                 ResourceModel(sim.cluster, sim.table), clock=self.clock,
                                 drain_timeout_s=opt.drain_timeout_s, warmup_requests=0,
                                 migrate_on_drain=opt.migrate_on_drain,
                                 migration_grace_s=opt.migration_grace_s)
        self.last_decision_s = -math.inf
        self.surge_quiet: QuietAfter | None = None  # after a surge decision that changed no replica
        self.targets = TargetTracker()  # switch decisions followed to their end (reconfig_s)
        self.switcher.on_step.append(lambda st: self.targets.observe(st.finished_s, self.switcher.actual_plan()))
        self.switcher.on_result.append(lambda res: self.targets.transition_ended(res.finished_s, res.target,
                                                                                  res.actual, res.status))
        self.last_target: Plan = sim.initial_plan
        self.submitted: dict[int, tuple[Plan, float]] = {}
        self.held: deque[SimRequest] = deque()
        self.credit: dict[str, dict[str, float]] = {}
        self.served: dict[str, int] = {}
        self.rr_next = 0
        self.requests: list[SimRequest] = []
        self.decisions: list[dict[str, Any]] = []
        self.ctl_inputs: list[dict[str, Any]] = []
        self.timeline: list[dict[str, Any]] = []
        self.n_events = 0
        self.iterations = 0
        self._serving: list[SimReplica] | None = None
        self._node_devices = {n.name: n.devices for n in sim.cluster.nodes}
        self._awake = False
        self._dispatch = {
            EventKind.ITER: self._on_iter,
            EventKind.TICK: self._on_tick,
            EventKind.READY: lambda h, _t: h.ready(),
            EventKind.STOPPED: lambda h, _t: h.stopped(),
            EventKind.DRAIN_TIMEOUT: lambda h, _t: h.drain_timeout(),
            EventKind.TIMER: lambda timer, _t: timer.callback(),
        }

    # ------------------------------------------------------------------ views
    def serving(self) -> list[SimReplica]:
        """Replicas the switcher set ready (they take new requests), in creation order."""
        if self._serving is None:
            ids = self.port.serving_ids
            self._serving = [r for r in self.backend.replicas.values() if r.replica_id in ids and r.state == "ready"]
        return self._serving

    def _changed(self) -> None:
        self._serving = None

    def _woke(self) -> None:
        self._awake = True

    # ------------------------------------------------------------------ the loop
    async def run(self) -> None:
        """Deploy the initial plan (no start cost), then process every event until none is left."""
        opt = self.opt
        self.backend.instant = True
        await self.switcher.apply(self.sim.initial_plan)
        self.backend.instant = False
        if self.sim.controller is not None and self.n:
            t = opt.control_interval_s
            while t <= self.duration + 1e-9:
                self.events.push(t, Priority.TICK, EventKind.TICK)
                t += opt.control_interval_s
            if opt.surge is not None:  # surge checks between the ticks, as the live orchestrator's
                t = opt.surge.check_interval_s
                while t <= self.duration + 1e-9:
                    self.events.push(t, Priority.TICK, EventKind.TICK, opt.surge)
                    t += opt.surge.check_interval_s
        pbar = None
        if opt.progress:
            from tqdm import tqdm

            pbar = tqdm(total=self.n, unit="req", desc=f"simulate {self.sim.policy}", leave=False)
        heap = self.events.heap
        arr_list, n, inf = self.arr_list, self.n, math.inf
        next_sample = 0.0
        ai = 0
        while True:
            t_arr = arr_list[ai] if ai < n else inf
            if heap and (heap[0][0] < t_arr or (heap[0][0] == t_arr and heap[0][1] < Priority.ARRIVAL)):
                t, _, _, kind, payload = self.events.pop()
                if kind is EventKind.TIMER and payload.cancelled:
                    continue
            elif ai < n:
                t, kind, payload = t_arr, None, None
            else:
                break
            self.n_events += 1
            while t >= next_sample:
                self.timeline.append(self._sample(next_sample))
                next_sample += opt.sample_interval_s
            self.clock.advance_to(t)
            if kind is None:
                self._on_arrival(ai, t)
                ai += 1
                if pbar is not None and ai % 1000 == 0:
                    pbar.update(1000)
                continue
            self._dispatch[kind](payload, t)
            if self._awake:
                await self._settle()
        if pbar is not None:
            pbar.update(n - pbar.n)
            pbar.close()
        self.timeline.append(self._sample(self.clock.now()))
        for q in self.held:  # nothing ever became ready for them
            q.aborted = True

    async def _settle(self) -> None:
        """Run the event loop until every coroutine waits on a simulated event again.

        asyncio has no public "run until idle"; the loop's queue of ready callbacks
        (``BaseEventLoop._ready``) is empty exactly then, as nothing here waits on I/O or wall time.
        """
        self._awake = False
        ready = asyncio.get_running_loop()._ready  # type: ignore[attr-defined]  # noqa: SLF001
        await asyncio.sleep(0)
        while ready:
            await asyncio.sleep(0)

    def results(self) -> list[dict[str, Any]]:
        """Switch records of the transitions that started or stopped replicas (after the initial one)."""
        out = []
        for res in self.switcher.results[1:]:
            if res.replicas_changed:
                _, submitted = self.submitted.get(id(res.target), (res.target, res.started_s))
                out.append(transition_record(res, submitted))
        return out

    # ------------------------------------------------------------------ events
    def _on_arrival(self, i: int, t: float) -> None:
        c = int(self.cls_idx[i])
        q = SimRequest(i, t, int(self.inp[i]), int(self.out[i]), c,
                       str(self.source[i]) if self.source is not None else "")
        self.requests.append(q)
        self.monitor.record_admission(str(i), self.classes[c], q.input_tokens, q.output_tokens)
        if not self._route(q, t):
            if self._could_ever_fit(q):
                need = q.input_tokens + q.output_tokens
                # waiting for a free slot of a ready replica is queueing, not a switch's effect
                q.touched = q.touched or not any(r.max_tokens >= need for r in self.serving())
                self.held.append(q)
            else:
                q.refused = True
                self.monitor.record_completion(str(i), 0, False)

    def _on_iter(self, payload: tuple[SimReplica, int], t: float) -> None:
        r, ver = payload
        if ver != r.version or not r.busy or t != r.end_time():
            return
        res = r.finish_iteration(t)
        late = self.opt.contention.request_overhead_s  # serving-path latency the client sees on top
        for q in res.first_tokens:
            q.first_token_s = t + late
            self.monitor.record_first_token(str(q.rid))
        for q in res.finished:
            if q.first_token_s is None:  # pragma: no cover - a finished request has a first token
                q.first_token_s = t + late
            q.finish_s = t + late
            self.monitor.record_completion(str(q.rid), q.generated, True)
        if self.held and res.finished:
            self._release_held()  # freed slots take queued requests at once
        if r.outstanding:
            self._start(r, t)
        elif r.state == "draining":
            self.backend.handles[r.replica_id].idle()

    def _on_tick(self, surge: SurgeRule | None, t: float) -> None:
        """A control tick, or (``surge`` given) a surge check that decides only when it fires."""
        opt = self.opt
        snap: Any = self.monitor.snapshot()
        current = planning_base(self.switcher.target, self.last_target, self.switcher.actual_plan())
        note = ""
        if surge is not None:
            controller = self.sim.controller
            if t - self.last_decision_s < surge.min_gap_s or getattr(controller, "pinned", None) is not None:
                return
            rates, recent, arrivals = window_rates(*self.monitor.rate_history(), surge.window_s)
            check = check_surge(surge, current, self.sim.cluster, self.sim.table,
                                dict(zip(self.names, rates.tolist(), strict=True)), arrivals,
                                dict(zip(self.names, recent.tolist(), strict=True)))
            if not check.surge or (self.surge_quiet is not None and self.surge_quiet.skips(check, t)):
                return
            snap, note, surge_util = FlooredSnapshot(snap, check.rates_rps), check.reason, check.utilization
        self.last_decision_s = t
        hts, hrates = bin_history(*self.monitor.rate_history(), opt.history_bin_s)
        if opt.record_controller_inputs:
            self.ctl_inputs.append({"now_s": t, "snapshot": snap, "history_ts": hts.copy(),
                                    "history_rates": hrates.copy(), "current": current})
        controller = self.sim.controller
        d = controller.tick(t, snap, hts, hrates, current, note=note) if note else \
            controller.tick(t, snap, hts, hrates, current)
        if note:
            self.surge_quiet = None if d.replicas_changed else QuietAfter(t + opt.control_interval_s, surge_util)
        if d.changed:
            if d.replicas_changed:
                self.targets.decided(t, d.plan, self.switcher.actual_plan())
            self.switcher.submit(d.plan)
            self.submitted.setdefault(id(d.plan), (d.plan, t))
            self.last_target = d.plan
            self.decisions.append(d.to_dict())
            self._awake = True
        else:
            rec = getattr(controller, "record_outcome", None)
            self.decisions.append((rec(d, "unchanged") if rec is not None else d).to_dict())

    # ------------------------------------------------------------------ replicas and requests
    def _on_drain(self, r: SimReplica, now: float) -> None:
        for q in r.running:
            q.touched = True
        for q in r.waiting:
            q.touched = True

    def _on_abort(self, r: SimReplica, now: float) -> int:
        left = r.remove_all()
        if self.opt.migrate_on_drain:  # the endpoint resumes them elsewhere: route again (prefill prompt + output)
            for q in left:
                q.touched = True
                if not self._route(q, now):
                    self.held.append(q)
            return len(left)
        for q in left:
            q.aborted = True
            q.touched = True
            self.monitor.record_completion(str(q.rid), q.generated, False)
        return len(left)

    def _start(self, r: SimReplica, now: float) -> None:
        cm = self.opt.contention
        if cm.enabled:
            r.slowdown = self._slowdown(r, cm)
            r.step_overhead_s = cm.step_overhead_s
        end = r.start_iteration(now)
        if end is not None:
            self.iterations += 1
            self.events.push(end, Priority.ITER, EventKind.ITER, (r, r.version))

    def _slowdown(self, r: SimReplica, cm: ContentionModel) -> float:
        """Iteration-time multiplier for ``r``'s next iteration from its node's busy replicas and the
        output-token rate they stream (:mod:`oserve.sim.contention`)."""
        busy_dev = len(r.device_ids)
        others = 0
        rate = 0.0
        for o in self.backend.replicas.values():
            # a starting engine (weight load, warm-up, graph capture) keeps its cores busy too
            if o is r or o.node != r.node or not (o.busy or o.state == "starting"):
                continue
            others += 1
            busy_dev += len(o.device_ids)
            rate += o.token_rate
        # this replica's own stream: the rate of its previous iteration (it is idle now)
        rate += r.last_token_rate
        return cm.factor(busy_devices=busy_dev, node_devices=self._node_devices.get(r.node, busy_dev),
                         token_rate=rate, other_busy=others)

    def _route(self, q: SimRequest, now: float) -> bool:
        """Route one request; False if no ready replica fits it (the caller holds or refuses it)."""
        need = q.input_tokens + q.output_tokens
        serving = self.serving()
        if self.sim.routing_mode == "round-robin":
            fits = [r for r in serving if need <= r.max_tokens]
            if not fits:
                return False
            r = fits[self.rr_next % len(fits)]
            self.rr_next += 1
        else:
            if not serving:
                return False
            cands = [Candidate(r.replica_id, r.variant, r.max_tokens) for r in serving]
            cname = self.names[q.cls]
            routing = self.port.routing
            outstanding = {r.replica_id: r.outstanding for r in serving}
            if self.opt.router_queue:
                cands = open_candidates(cands, outstanding, {r.replica_id: r.params.max_num_seqs for r in serving})
            pending = ({r.replica_id: r.pending_prefill_tokens for r in serving}
                       if self.opt.replica_load == "prefill-tokens" else None)
            ch = choose_replica(cands, outstanding, needed_tokens=need, weights=routing.get(cname),
                                credit=self.credit.get(cname), served=self.served, routing_active=bool(routing),
                                pending_prefill_tokens=pending)
            if ch.replica_id is None:
                return False
            if ch.credit is not None:
                self.credit[cname] = ch.credit
            r = self.backend.replicas[ch.replica_id]
        self.served[r.replica_id] = self.served.get(r.replica_id, 0) + 1
        r.add(q)
        if not r.busy:
            self._start(r, now)
        else:
            cut = r.cut(now)
            if cut is not None:
                self.events.push(cut, Priority.ITER, EventKind.ITER, (r, r.version))
        return True

    def _could_ever_fit(self, q: SimRequest) -> bool:
        params = self.sim.params
        pool = [params[p.variant] for p in self.last_target.replicas] + [r.params for r in self.backend.replicas.values()]
        return any(p.fits(q) for p in pool)

    def _release_held(self) -> None:
        """Dispatch held requests, oldest first, while any serving replica has a free slot."""
        now = self.clock.now()
        keep: deque[SimRequest] = deque()
        held = self.held
        while held:
            q = held.popleft()
            if self._route(q, now):
                continue
            keep.append(q)
            if self._all_full():
                break
        keep.extend(held)
        self.held = keep

    def _all_full(self) -> bool:
        """True when the router queue is on and every serving replica is at its ``max_num_seqs``."""
        if not self.opt.router_queue or self.sim.routing_mode != "plan":
            return False
        return all(r.outstanding >= r.params.max_num_seqs for r in self.serving())

    def _sample(self, t: float) -> dict[str, Any]:
        counts: dict[str, int] = {}
        starting = draining = 0
        used = 0
        in_system = len(self.held)
        for r in self.backend.replicas.values():
            in_system += r.outstanding
            if r.state == "ready":
                counts[r.variant] = counts.get(r.variant, 0) + 1
            elif r.state == "starting":
                starting += 1
            elif r.state in ("draining", "stopping"):
                draining += 1
            if r.state in ("ready", "draining", "stopping"):
                used += r.params.weights_bytes + r.used_kv_tokens * r.params.kv_bytes_per_token
            elif r.state in ("starting", "parked"):  # a parked replica keeps its weights
                used += r.params.weights_bytes
        return {"time_s": t, "replicas": counts, "starting": starting, "draining": draining,
                "memory_reserved_bytes": self.backend.memory_in_use_bytes, "memory_used_bytes": used,
                "in_system": in_system}
