"""The simulator's entry point: a trace replayed on simulated replicas, controlled by the real control code.

:class:`Simulation` holds the set-up (trace, profile table, cluster, initial plan, controller,
:class:`SimOptions`); :meth:`Simulation.run` runs the event loop of :mod:`oserve.sim.loop` (events
as data, :mod:`oserve.sim.events`) and returns a :class:`SimResult`. Switching is the live
:class:`~oserve.control.switcher.Switcher` on a simulated backend (:mod:`oserve.sim.backend`) and
a simulated clock (:mod:`oserve.sim.clock`).
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from oserve.control.surge import SurgeRule
from oserve.errors import ConfigError
from oserve.policies.routing import check_replica_load
from oserve.profiles.table import ProfileTable
from oserve.sim.contention import NO_CONTENTION, ContentionModel
from oserve.sim.loop import SimRun
from oserve.sim.replica import ReplicaParams, check_prefill_only_fixed
from oserve.types import DEFAULT_SCHEME, ClassScheme, ClusterSpec, Plan
from oserve.workload.trace import Trace

__all__ = ["SimOptions", "SimResult", "Simulation"]


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
        router_queue: with ``routing="plan"``, model the live router's queue: a replica takes at most
            ``max_num_seqs`` requests at once and the rest wait in the router (FIFO) until a slot
            frees or a replica becomes ready (:func:`oserve.policies.routing.open_candidates`).
        contention: slowdown of iterations on shared CPU nodes (:mod:`oserve.sim.contention`;
            default: none, the table's iteration times as measured).
        surge: surge checks between control ticks, as the live orchestrator's
            (:mod:`oserve.control.surge`); None: off.
        migrate_on_drain: a switch's drains hand in-flight requests to other replicas at once; each
            is routed again and prefills its prompt plus output so far there (the endpoint's resume,
            :mod:`oserve.server.resume`).
        migration_grace_s: with ``migrate_on_drain``, how long a drain lets in-flight requests finish
            before the rest move, seconds (0: all at once).
        prefill_only_fixed: fixed cost of an iteration without decodes, ``"a+d"`` (default) or ``"a"``
            (the profiled lone-prompt TTFT ``prefill_s``; :data:`oserve.sim.replica.PREFILL_ONLY_FIXED`).
        replica_load: with ``routing="plan"``, how the router measures a replica's load within a variant:
            ``"prefill-tokens"`` (default: pending prefill tokens first) or ``"requests"`` (outstanding
            requests; :data:`oserve.policies.routing.REPLICA_LOADS`).
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
    router_queue: bool = True
    contention: ContentionModel = NO_CONTENTION
    surge: SurgeRule | None = None
    migrate_on_drain: bool = False
    migration_grace_s: float = 0.0
    prefill_only_fixed: str = "a+d"
    replica_load: str = "prefill-tokens"

    def __post_init__(self) -> None:
        check_prefill_only_fixed(self.prefill_only_fixed)
        check_replica_load(self.replica_load)
        for name in ("control_interval_s", "monitor_window_s", "history_bin_s", "sample_interval_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}", field=name, allowed="> 0 s")
        for name in ("drain_timeout_s", "stop_time_s", "warmup_s", "migration_grace_s"):
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
        transitions: switch records (:func:`oserve.sim.loop.transition_record`) of the transitions
            that started or stopped replicas.
        targets: switch decisions (:class:`oserve.control.targets.TargetRecord` dicts): decisions that
            changed the replica set, each reached, superseded, abandoned or pending.
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
    targets: list[dict[str, Any]] = field(default_factory=list)
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
        controller: an :class:`oserve.control.controller.Controller`, or None for a static deployment.
        routing: ``"plan"`` (the router's choice function with the plan's weights) or
            ``"round-robin"`` (over the ready replicas that fit).
        scheme: request classes.
        options: see :class:`SimOptions`.
        policy: label for the result.

    The run is deterministic (no random draw): the same inputs give the same result.

    Raises:
        ConfigError: unknown routing mode or a plan naming a variant the table lacks.
    """

    def __init__(self, trace: Trace, table: ProfileTable, cluster: ClusterSpec, initial_plan: Plan, *,
                 controller: Any | None = None, routing: str = "plan", scheme: ClassScheme = DEFAULT_SCHEME,
                 options: SimOptions | None = None, policy: str = "sim") -> None:
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
        self.params = {
            name: ReplicaParams.from_profile(v, block_size=self.options.block_size,
                                             prefill_only_fixed=self.options.prefill_only_fixed)
            for name, v in table.variants.items() if v.kv_bytes_per_token > 0
        }
        for p in initial_plan.replicas:
            if p.variant not in self.params:
                raise ConfigError(f"plan names variant {p.variant!r} absent from the table",
                                  field="plan.replicas.variant", allowed=", ".join(sorted(self.params)))

    # ------------------------------------------------------------------ run
    def run(self) -> SimResult:
        """Simulate the whole trace until every request has finished, been aborted or refused.

        The run uses its own asyncio event loop (the switcher is async); called from async code,
        it runs in a worker thread (and blocks the caller's loop until it ends).
        """
        t_wall = time.perf_counter()
        r = SimRun(self)

        def go() -> None:
            # a plain selector loop: SimRun settles on its queue of ready callbacks (see SimRun._settle)
            with asyncio.Runner(loop_factory=asyncio.SelectorEventLoop) as runner:
                runner.run(r.run())

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            go()
        else:  # called from async code: the run gets its own loop in a worker thread
            with ThreadPoolExecutor(1, thread_name_prefix="oserve-sim") as pool:
                pool.submit(go).result()
        return SimResult(
            policy=self.policy,
            requests=[q.record() for q in r.requests],
            decisions=r.decisions,
            transitions=r.results(),
            targets=[t.to_dict() for t in r.targets.records],
            timeline=r.timeline,
            total_memory_bytes=sum(n.devices * n.device_memory_bytes for n in self.cluster.nodes),
            duration_s=r.duration,
            end_s=r.clock.now(),
            events=r.n_events,
            wall_s=time.perf_counter() - t_wall,
            iterations=r.iterations,
            class_names=list(self.scheme.names),
            initial_plan=self.initial_plan.model_dump(mode="json"),
            controller_inputs=r.ctl_inputs,
        )
