"""The simulator's YAML configuration (pydantic v2, ``extra="forbid"``).

Example (``examples/sim-4x8-a100.yaml``)::

    cluster:
      nodes: 4
      devices_per_node: 8
      device_type: a100-80gb
      device_memory_gib: 80
    table: examples/profiles/a100-80gb-mixed.json   # relative to the YAML file
    model: llama-2-70b                               # optional: only this model's variants
    variants: null                                   # optional: an explicit variant list
    scheme: {input_edges: [2048], output_edges: [256]}
    slo: {ttft_s: 2.0, tpot_s: 0.2}                  # optional: overrides the table's SLO
    control: {interval_s: 30, horizon_s: 90, monitor_window_s: 30, history_bin_s: 30, history_s: 3600}
    forecaster: {name: ewma, params: {}}
    planner: {name: milp, params: {}}              # greedy for large clusters
    switching: {drain_timeout_s: 30, stop_time_s: 5, warmup_s: 0}
    routing: {static: round-robin}
    plain_vllm: {min_kv_fraction: 0.25}
    initial_window_s: 300
    deployment: null               # or the serve config's initial replicas: [{variant, node, device_ids}]
    planner_capacity_factor: 1.0   # capacities the planner sees x this (1 = table as is)
    trace: {paths: [], scale: 1.0, seed: 0, duration_s: null}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from oserve.policies.plan import ClusterSpec, Plan, ReplicaPlacement
from oserve.profiles.table import SLO

__all__ = ["SimConfig", "ClusterConfig", "load_config"]

GIB = 1 << 30


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ClusterConfig(_Model):
    nodes: int = Field(4, ge=1, description="identical nodes")
    devices_per_node: int = Field(8, ge=1, description="GPUs (or CPU cores) per node")
    device_type: str = Field("a100-80gb", description="device type, as in the profile table")
    device_memory_gib: float = Field(80.0, gt=0, description="memory per device, GiB")

    def spec(self) -> ClusterSpec:
        return ClusterSpec.homogeneous(self.nodes, self.devices_per_node, self.device_type,
                                       int(self.device_memory_gib * GIB))


class SchemeConfig(_Model):
    """Request classes, as the ``classes`` section of the serve config (same defaults)."""

    input_edges: list[int] = Field([2048], description="interior input-token edges")
    output_edges: list[int] = Field([256], description="interior output-token edges")
    input_names: list[str] | None = Field(None, description="input bucket names (default short-in/long-in)")
    output_names: list[str] | None = Field(None, description="output bucket names (default short-out/long-out)")
    expected_input_tokens: list[int] | None = Field(None, description="representative input per bucket, tokens")
    expected_output_tokens: list[int] | None = Field(None, description="representative output per bucket, tokens")


class ControlConfig(_Model):
    """The control loop; the defaults are the live orchestrator's (``oserve serve``)."""

    interval_s: float = Field(10.0, gt=0, description="time between control ticks, s")
    horizon_s: float = Field(30.0, gt=0, description="forecast horizon, s")
    monitor_window_s: float = Field(10.0, ge=1, description="monitor snapshot window, s")
    history_bin_s: float = Field(1.0, gt=0, description="rate-history bin handed to the forecaster, s")
    history_s: float = Field(600.0, gt=0, description="rate history kept by the monitor, s")
    min_history: int = Field(6, ge=1, description="history bins before the forecaster is fitted")


class ComponentConfig(_Model):
    name: str = Field(..., description="registry name")
    params: dict[str, Any] = Field(default_factory=dict, description="constructor parameters")


class SwitchingConfig(_Model):
    drain_timeout_s: float = Field(30.0, ge=0, description="drain limit before aborting, s")
    stop_time_s: float = Field(5.0, ge=0, description="engine stop time before memory is free, s")
    warmup_s: float = Field(0.0, ge=0, description="warm-up added to each variant's start_time_s, s")


class RoutingConfig(_Model):
    static: Literal["round-robin", "plan"] = Field(
        "round-robin", description="routing of static deployments: round-robin, or the oserve router (least outstanding)")


class PlainVllmConfig(_Model):
    min_kv_fraction: float = Field(0.25, ge=0, lt=1, description="share of replica memory the KV cache must get")


class TraceConfig(_Model):
    paths: list[str] = Field(default_factory=list, description="Azure-format CSV traces, merged on one clock")
    scale: float = Field(1.0, gt=0, description="arrival-rate scale (thinning/duplication, seeded)")
    seed: int = Field(0, description="seed of the rate scaling")
    duration_s: float | None = Field(None, gt=0, description="keep the first duration_s seconds")


class SimConfig(_Model):
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    table: str = Field(..., description="profile table JSON (relative paths: to the YAML file)")
    model: str | None = Field(None, description="keep only this model's variants")
    variants: list[str] | None = Field(None, description="keep only these variants")
    scheme: SchemeConfig = Field(default_factory=SchemeConfig)
    slo: SLO | None = Field(None, description="SLO override (default: the table's)")
    control: ControlConfig = Field(default_factory=ControlConfig)
    forecaster: ComponentConfig = Field(default_factory=lambda: ComponentConfig(name="ewma"))
    planner: ComponentConfig = Field(default_factory=lambda: ComponentConfig(name="milp"))
    switching: SwitchingConfig = Field(default_factory=SwitchingConfig)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    plain_vllm: PlainVllmConfig = Field(default_factory=PlainVllmConfig)
    initial_window_s: float = Field(300.0, gt=0, description="oserve's initial plan: mean rate of this first window")
    deployment: list[ReplicaPlacement] | None = Field(
        None, description="oserve's initial replicas, as the serve config's `deployment` (default: the planner's "
        "plan for the first initial_window_s)")
    planner_capacity_factor: float = Field(
        1.0, gt=0, le=1, description="multiplies every capacity_rps the oserve planner sees (a safety margin; "
        "1 = the table as is); the simulated replicas always use the table's iteration models")
    block_size: int = Field(16, ge=1, description="KV-cache block size, tokens")
    sample_interval_s: float = Field(10.0, gt=0, description="timeline sample period, s")
    trace: TraceConfig = Field(default_factory=TraceConfig)
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
        ConfigError: unreadable file or invalid fields (names the first bad field).
    """
    from oserve.yaml_config import load_yaml_model

    p = Path(path)
    return load_yaml_model(p, SimConfig, defaults={"base_dir": str(p.parent)})
