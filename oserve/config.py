"""The ``oserve serve`` configuration: one YAML file validated by pydantic.

Example (``examples/cpu-smollm2.yaml``)::

    model:
      served_name: smollm2-135m-instruct
      path: default                 # the embedded SmolLM2-135M-Instruct checkpoint, or a folder
    server: {host: 127.0.0.1, port: 8000}
    cluster:
      nodes: [{name: local, device_type: cpu, devices: 2, device_memory_bytes: 4294967296}]
    variants:
      fp32-s32: {dtype: float32, max_num_seqs: 32, max_model_len: 2048, kv_cache_bytes: 536870912}
    deployment:
      - {variant: fp32-s32, node: local, devices: [0]}
      - {variant: fp32-s32, node: local, devices: [1]}
    orchestrator:                   # optional: without it the deployment is static
      table: examples/profiles/cpu-smollm2.json
      forecaster: {kind: ewma}
      planner: {kind: milp}

Every model forbids unknown keys; an error names the field and the allowed values.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from oserve.errors import ConfigError
from oserve.policies.plan import ClusterSpec, Plan, ReplicaPlacement
from oserve.profiles.table import SLO
from oserve.workload.classes import ClassScheme

__all__ = [
    "ModelConfig", "ServerConfig", "BackendConfig", "VariantConfig", "ClassesConfig",
    "ComponentConfig", "OrchestratorConfig", "ServeConfig", "load_config",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelConfig(_Strict):
    served_name: str = Field("smollm2-135m-instruct", description="model name clients put in 'model'")
    path: str = Field("default", description="'default' (embedded SmolLM2-135M-Instruct) or a checkpoint folder")


class ServerConfig(_Strict):
    host: str = Field("127.0.0.1", description="address to bind; loopback by default")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0: any free port)")
    api_key: str | None = Field(None, min_length=1, description="bearer key; also OSERVE_API_KEY")
    max_body_bytes: int = Field(1 << 20, ge=1, description="largest request body, bytes")


class BackendConfig(_Strict):
    kind: Literal["vllm"] = Field("vllm", description="engine kind")
    start_timeout_s: float = Field(300.0, gt=0, description="an engine not up by then fails to start, s")


class VariantConfig(_Strict):
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description="weights/activations")
    quantization: str | None = Field(None, description="engine quantization method (GPU), e.g. 'awq'")
    tensor_parallel_size: int = Field(1, ge=1, le=8)
    pipeline_parallel_size: int = Field(1, ge=1, le=8)
    max_num_seqs: int = Field(32, ge=1, le=1024)
    max_model_len: int = Field(2048, ge=64, le=131072, description="prompt + output tokens")
    max_num_batched_tokens: int | None = Field(None, ge=64)
    kv_cache_bytes: int | None = Field(None, gt=0, description="KV-cache memory per replica, bytes")


class ClassesConfig(_Strict):
    input_edges: list[int] = Field([2048], description="interior edges over input tokens")
    output_edges: list[int] = Field([256], description="interior edges over output tokens")
    input_names: list[str] | None = None
    output_names: list[str] | None = None
    expected_input_tokens: list[int] | None = None
    expected_output_tokens: list[int] | None = None

    def to_scheme(self) -> ClassScheme:
        """The :class:`ClassScheme`; names and expected lengths default to labels and bucket midpoints
        (the top bucket's midpoint is taken as 1.5x its lower edge)."""
        n_in, n_out = len(self.input_edges) + 1, len(self.output_edges) + 1

        def names(given: list[str] | None, n: int, two: list[str], prefix: str) -> tuple[str, ...]:
            return tuple(given or (two if n == 2 else [f"{prefix}{i}" for i in range(n)]))

        def mids(edges: list[int]) -> tuple[int, ...]:
            b = [0, *edges]
            return tuple(max(1, (b[i] + b[i + 1]) // 2) for i in range(len(edges))) + (max(1, b[-1] * 3 // 2),)

        try:
            return ClassScheme(
                input_edges=tuple(self.input_edges), output_edges=tuple(self.output_edges),
                input_names=names(self.input_names, n_in, ["short-in", "long-in"], "in"),
                output_names=names(self.output_names, n_out, ["short-out", "long-out"], "out"),
                expected_input_tokens=tuple(self.expected_input_tokens or mids(self.input_edges)),
                expected_output_tokens=tuple(self.expected_output_tokens or mids(self.output_edges)),
            )
        except ConfigError as exc:
            raise ConfigError(f"classes: {exc}", field=f"classes.{exc.field}", allowed=exc.allowed) from exc


class ComponentConfig(_Strict):
    kind: str = Field(..., description="registered name, e.g. 'ewma' or 'milp'")
    params: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of its constructor")


class OrchestratorConfig(_Strict):
    table: str = Field(..., description="profile table (JSON) path, relative to the config file")
    forecaster: ComponentConfig = Field(
        default_factory=lambda: ComponentConfig(kind="default"),
        description="'default' (oserve.forecast.make_default: ewma-auto, guarded, spike-aware; the backtest "
        "winner) or a registered forecaster name")
    planner: ComponentConfig = Field(default_factory=lambda: ComponentConfig(kind="milp"))
    slo: SLO = Field(default_factory=SLO)
    control_interval_s: float = Field(10.0, gt=0)
    horizon_s: float = Field(30.0, gt=0)
    drain_timeout_s: float = Field(30.0, ge=0)
    min_history: int = Field(6, ge=1)
    history_bin_s: float = Field(1.0, gt=0)


class ServeConfig(_Strict):
    model: ModelConfig = Field(default_factory=ModelConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    backend: BackendConfig = Field(default_factory=BackendConfig)
    cluster: ClusterSpec
    variants: dict[str, VariantConfig]
    deployment: list[ReplicaPlacement] = Field(..., min_length=1, description="initial replicas")
    classes: ClassesConfig = Field(default_factory=ClassesConfig)
    orchestrator: OrchestratorConfig | None = None
    base_dir: str = Field(".", description="folder relative paths resolve against (set by load_config)")

    @model_validator(mode="after")
    def _check_references(self) -> ServeConfig:
        nodes = {n.name: n for n in self.cluster.nodes}
        owner: dict[tuple[str, int], int] = {}
        for i, rep in enumerate(self.deployment):
            for d in rep.device_ids:
                if (rep.node, d) in owner:
                    raise ValueError(f"deployment[{i}].device_ids: device {d} of node {rep.node!r} is already used by "
                                     f"deployment[{owner[(rep.node, d)]}]; each device serves one replica")
                owner[(rep.node, d)] = i
            if rep.variant not in self.variants:
                raise ValueError(f"deployment[{i}].variant {rep.variant!r} is not one of {sorted(self.variants)}")
            node = nodes.get(rep.node)
            if node is None:
                raise ValueError(f"deployment[{i}].node {rep.node!r} is not one of {sorted(nodes)}")
            bad = [d for d in rep.device_ids if not 0 <= d < node.devices]
            if bad or not rep.device_ids:
                raise ValueError(f"deployment[{i}].devices {list(rep.device_ids)} must be ids in [0, {node.devices})")
        return self

    def resolve(self, path: str) -> Path:
        p = Path(path)
        return p if p.is_absolute() else Path(self.base_dir) / p

    def initial_plan(self) -> Plan:
        """The configured deployment as a plan (requests of every class spread over all replicas)."""
        return Plan(replicas=list(self.deployment), reason="initial deployment from the config", planner="config")


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> ServeConfig:
    """Read and validate a serve config.

    Args:
        path: YAML file.
        overrides: top-level keys replacing those of the file (used by the CLI and tests).

    Raises:
        ConfigError: unreadable YAML, or a field out of range (the message names the field path
            and what is allowed).
    """
    from oserve.yaml_config import load_yaml_model

    p = Path(path)
    cfg = load_yaml_model(p, ServeConfig, overrides, defaults={"base_dir": str(p.resolve().parent)})
    if os.environ.get("OSERVE_API_KEY") and not cfg.server.api_key:
        cfg = cfg.model_copy(update={"server": cfg.server.model_copy(update={"api_key": os.environ["OSERVE_API_KEY"]})})
    return cfg
