"""Data types the planners exchange: cluster, demand, plan. Pure values, no I/O."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["NodeSpec", "ClusterSpec", "Demand", "ReplicaPlacement", "Plan"]


class NodeSpec(BaseModel):
    """One machine. On GPUs a device is a GPU; on CPU a device is a core.

    TP/PP groups of a replica stay within one node.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    device_type: str = Field(..., description="'cpu' or a GPU type, e.g. 'a100-80gb'")
    devices: int = Field(..., ge=1, description="GPUs, or CPU cores")
    device_memory_bytes: int = Field(..., gt=0, description="memory per device (per core share on CPU)")


class ClusterSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    nodes: list[NodeSpec]

    @property
    def total_devices(self) -> int:
        return sum(n.devices for n in self.nodes)

    @classmethod
    def homogeneous(cls, n_nodes: int, devices: int, device_type: str, device_memory_bytes: int) -> ClusterSpec:
        """``n_nodes`` identical nodes named ``node0..``."""
        return cls(nodes=[NodeSpec(name=f"node{i}", device_type=device_type, devices=devices,
                                   device_memory_bytes=device_memory_bytes) for i in range(n_nodes)])


class Demand(BaseModel):
    """Per-class arrival rate to plan for, req/s (forecast or observed), and per-class minimum quality."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    rates_rps: dict[str, float]
    min_quality: dict[str, Annotated[float, Field(ge=0, le=1)]] = Field(
        default_factory=dict, description="per class, the lowest variant quality score (0-1, "
                                          "oserve.profiles.quality) that may serve it; classes absent: any")


class ReplicaPlacement(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    variant: str
    node: str
    device_ids: tuple[int, ...]


class Plan(BaseModel):
    """A deployment: replicas placed on devices plus per-class routing weights.

    Attributes:
        replicas: replicas to run.
        routing: ``routing[class][variant]`` = share of that class's traffic sent to the variant's
            replicas; for each class with any capacity the shares sum to 1.
        predicted_goodput_rps: demand served within SLO as the planner predicts, req/s.
        slo_attainment: predicted_goodput / total demand (1.0 for zero demand).
        memory_used_bytes: per ``"node:device"`` key, bytes planned on that device.
        objective: the planner's objective value (comparable across planners given the same inputs).
        reason: human-readable explanation (binding constraint, fallback, hysteresis...).
        planner: name of the planner that produced the plan.
        admit_rps: per class, admission limit in req/s when demand exceeds what the plan serves.
        devices_used: devices occupied by the replicas.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    replicas: list[ReplicaPlacement] = Field(default_factory=list)
    routing: dict[str, dict[str, float]] = Field(default_factory=dict)
    predicted_goodput_rps: float = 0.0
    slo_attainment: float = 1.0
    memory_used_bytes: dict[str, int] = Field(default_factory=dict)
    objective: float = 0.0
    reason: str = ""
    planner: str = ""
    admit_rps: dict[str, float] = Field(
        default_factory=dict,
        description="per class, the most req/s to admit (the rest is rejected at admission because no "
                    "replica could serve it within SLO); classes absent are admitted in full")
    devices_used: int = Field(0, description="devices the replicas occupy")
    optimal: bool | None = Field(
        None, description="True when the planner proved the plan optimal for the shared objective (MILP solved "
                          "to its gap); None when the planner makes no such claim")

    def replica_counts(self) -> dict[str, int]:
        """Number of replicas per variant."""
        out: dict[str, int] = {}
        for r in self.replicas:
            out[r.variant] = out.get(r.variant, 0) + 1
        return out
