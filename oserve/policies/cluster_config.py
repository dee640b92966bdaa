"""Cluster description on disk (YAML) for ``oserve plan`` and configs.

Format::

    nodes:
      - name: gpu            # with count > 1 the nodes are named gpu0, gpu1, ...
        count: 4             # optional, default 1
        device_type: a100-80gb   # 'cpu' for CPU cores; must match the profile table's variants
        devices: 8           # GPUs per node, or CPU cores
        device_memory_gib: 80    # memory per device, GiB (or device_memory_bytes)
    planner:                 # optional
      kind: milp             # milp | greedy | flow | static | hysteresis | a registered name
      time_limit_s: 1.0      # any constructor argument of that planner
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from oserve.errors import ConfigError
from oserve.policies.plan import ClusterSpec, NodeSpec

__all__ = ["NodeGroupConfig", "PlannerConfig", "ClusterConfig", "load_cluster_config"]


class NodeGroupConfig(BaseModel):
    """One node, or ``count`` identical nodes."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(..., description="node name, or the name prefix when count > 1")
    count: int = Field(1, ge=1, description="number of identical nodes")
    device_type: str = Field(..., description="'cpu' or a GPU type such as 'a100-80gb'")
    devices: int = Field(..., ge=1, description="GPUs per node, or CPU cores")
    device_memory_gib: float | None = Field(None, gt=0, description="memory per device, GiB")
    device_memory_bytes: int | None = Field(None, gt=0, description="memory per device, bytes")

    @model_validator(mode="after")
    def _one_memory(self) -> NodeGroupConfig:
        if (self.device_memory_gib is None) == (self.device_memory_bytes is None):
            raise ValueError("give exactly one of device_memory_gib and device_memory_bytes")
        return self

    def nodes(self) -> list[NodeSpec]:
        mem = self.device_memory_bytes or int(round((self.device_memory_gib or 0) * 2**30))
        names = [self.name] if self.count == 1 else [f"{self.name}{i}" for i in range(self.count)]
        return [NodeSpec(name=n, device_type=self.device_type, devices=self.devices, device_memory_bytes=mem)
                for n in names]


class PlannerConfig(BaseModel):
    """Which planner to build and its constructor arguments (extra keys are passed through)."""

    model_config = ConfigDict(extra="allow")
    kind: str = Field("milp", description="registered planner name")

    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class ClusterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    nodes: list[NodeGroupConfig] = Field(..., min_length=1)
    planner: PlannerConfig = Field(default_factory=PlannerConfig)

    def cluster(self) -> ClusterSpec:
        """The :class:`ClusterSpec` the node entries describe."""
        return ClusterSpec(nodes=[n for g in self.nodes for n in g.nodes()])


def load_cluster_config(path: str | Path) -> ClusterConfig:
    """Read a cluster YAML file.

    Raises:
        ConfigError: unreadable file, invalid YAML or a field outside its allowed range (named).
    """
    from oserve.yaml_config import load_yaml_model

    p = Path(path)
    cfg = load_yaml_model(p, ClusterConfig)
    names = [n.name for n in cfg.cluster().nodes]
    if len(set(names)) != len(names):
        raise ConfigError(f"cluster config {p}: node names repeat", field="nodes.name", allowed="unique names")
    return cfg
