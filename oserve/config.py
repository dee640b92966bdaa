"""The configuration models: one YAML dialect for ``oserve serve``, ``oserve simulate`` and ``oserve plan``.

Every component (backend, forecaster, planner) is chosen the same way, ``{kind: NAME, params: {...}}``
(:class:`ComponentConfig`: ``kind`` is a registered name, ``params`` the keyword arguments of its
constructor), and every file describes its machines with the same :class:`ClusterConfig`.

Example (``examples/cpu-smollm2.yaml``)::

    model:
      served_name: smollm2-135m-instruct
      path: default                 # the embedded SmolLM2-135M-Instruct checkpoint, or a folder
    server: {host: 127.0.0.1, port: 8000}
    backend: {kind: vllm, params: {start_timeout_s: 300}}
    cluster:
      nodes: [{name: local, device_type: cpu, devices: 2, device_memory_bytes: 4294967296}]
    variants:
      fp32-s32: {dtype: float32, max_num_seqs: 32, max_model_len: 2048, kv_cache_bytes: 536870912}
    deployment:
      - {variant: fp32-s32, node: local, device_ids: [0]}
      - {variant: fp32-s32, node: local, device_ids: [1]}
    orchestrator:                   # optional: without it the deployment is static
      table: profiles/cpu-smollm2.json
      forecaster: {kind: default}
      planner: {kind: milp, params: {time_limit_s: 1.0}}

Every model forbids unknown keys; an error names the field and the allowed values.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from oserve.errors import ConfigError
from oserve.types import DEFAULT_SCHEME, SLO, ClassScheme, ClusterSpec, NodeSpec, Plan, ReplicaPlacement
from oserve.yaml_config import load_yaml_model

__all__ = [
    "ComponentConfig", "NodeGroupConfig", "ClusterConfig", "PlanConfig", "ModelConfig", "ServerConfig",
    "VariantConfig", "ClassesConfig", "ParkingConfig", "HysteresisConfig", "OrchestratorConfig", "ServeConfig", "load_config", "load_plan_config",
    "read_yaml", "validate",
]

M = TypeVar("M", bound=BaseModel)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ComponentConfig(_Strict):
    """Which implementation of a component to build: ``{kind: NAME, params: {...}}``.

    ``kind`` is looked up in the component's registry (:mod:`oserve.backends.registry`,
    :mod:`oserve.forecast.registry`, :mod:`oserve.policies.base`), which also holds the entry-point
    groups ``oserve.backends``, ``oserve.forecasters`` and ``oserve.planners``.
    """

    kind: str = Field(..., min_length=1, description="registered name, e.g. 'vllm', 'default', 'ewma' or 'milp'")
    params: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of its constructor")


class HysteresisConfig(_Strict):
    """The control loop's switch rule (:class:`oserve.policies.HysteresisPlanner` around the planner).

    A switch that starts replicas is decided once: it happens when the planner's predicted objective
    gain times the control horizon exceeds ``min_gain_fraction`` x goodput x horizon plus
    ``switch_cost_weight`` x start time of the replicas it starts; a pure scale-down pays nothing and
    happens as soon as the lower demand has lasted ``scale_down_window_s``. Defaults measured in
    ``bench/results/churn.json``.
    """

    enabled: bool = Field(True, description="wrap the configured planner in the hysteresis switch rule "
                                            "(ignored for the 'hysteresis' and 'static' planners)")
    min_gain_fraction: float = Field(
        0.05, ge=0, allow_inf_nan=False, description="a switch that starts replicas must gain more than this fraction of the current "
                                "plan's goodput (req/s), over the horizon")
    switch_cost_weight: float = Field(
        1e-3, ge=0, allow_inf_nan=False, description="one-time cost of a switch, requests per second of start time of the replicas "
                                "it starts (profile table start_time_s)")
    scale_down_window_s: float = Field(
        60.0, ge=0, allow_inf_nan=False, description="the planner is handed, per class, the largest demand of the last this many "
                                "seconds: more demand is served at once, less only once it lasted this long "
                                "(damps stop/restart on noise; bounds the time to scale down at zero demand), s")


class NodeGroupConfig(_Strict):
    """One node, or ``count`` identical nodes (named ``name0``, ``name1``, ... when ``count`` > 1)."""

    name: str = Field(..., min_length=1, description="node name, or the name prefix when count > 1")
    count: int = Field(1, ge=1, description="number of identical nodes")
    device_type: str = Field(..., description="'cpu' or a GPU type such as 'a100-80gb' (as in the profile table)")
    devices: int = Field(..., ge=1, description="GPUs per node, or CPU cores")
    device_memory_gib: float | None = Field(None, gt=0, description="memory per device, GiB (or device_memory_bytes)")
    device_memory_bytes: int | None = Field(None, gt=0, description="memory per device, bytes (or device_memory_gib)")

    @model_validator(mode="after")
    def _one_memory(self) -> NodeGroupConfig:
        if (self.device_memory_gib is None) == (self.device_memory_bytes is None):
            raise ValueError("give exactly one of device_memory_gib and device_memory_bytes")
        return self

    def nodes(self) -> list[NodeSpec]:
        """The :class:`NodeSpec` of each node of the group."""
        mem = self.device_memory_bytes or int(round((self.device_memory_gib or 0) * 2**30))
        names = [self.name] if self.count == 1 else [f"{self.name}{i}" for i in range(self.count)]
        return [NodeSpec(name=n, device_type=self.device_type, devices=self.devices, device_memory_bytes=mem)
                for n in names]


class ClusterConfig(_Strict):
    """The machines, as node groups; the same model in serve, simulator and plan files.

    A :class:`~oserve.types.ClusterSpec` is accepted as well (its nodes become one group each).
    """

    nodes: list[NodeGroupConfig] = Field(..., min_length=1, description="node groups")

    @model_validator(mode="before")
    @classmethod
    def _from_spec(cls, data: Any) -> Any:
        if isinstance(data, ClusterSpec):
            return {"nodes": [n.model_dump() for n in data.nodes]}
        return data

    @model_validator(mode="after")
    def _unique_names(self) -> ClusterConfig:
        names = [n.name for g in self.nodes for n in g.nodes()]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"node names repeat: {dup}; every node needs its own name")
        return self

    def spec(self) -> ClusterSpec:
        """The :class:`~oserve.types.ClusterSpec` the node groups describe."""
        return ClusterSpec(nodes=[n for g in self.nodes for n in g.nodes()])


class PlanConfig(ClusterConfig):
    """The ``oserve plan`` file: a cluster plus the planner to run on it."""

    planner: ComponentConfig = Field(default_factory=lambda: ComponentConfig(kind="milp"),
                                     description="planner to run (default milp)")


class ModelConfig(_Strict):
    """The served model."""

    served_name: str = Field("smollm2-135m-instruct", description="model name clients put in 'model'")
    path: str = Field("default", description="'default' (embedded SmolLM2-135M-Instruct) or a checkpoint folder "
                                             "(relative to the config file); unused by backends that load no "
                                             "checkpoint (fake)")


class ServerConfig(_Strict):
    """The OpenAI-compatible HTTP endpoint."""

    host: str = Field("127.0.0.1", description="address to bind; loopback by default")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0: any free port)")
    api_key: str | None = Field(None, min_length=1, description="bearer key clients must send; load_config takes "
                                                                "it from OSERVE_API_KEY when the file has none")
    max_body_bytes: int = Field(1 << 20, ge=1, description="largest request body, bytes")
    queue_max: int = Field(1024, ge=0, le=1_000_000, description="most requests waiting in the router-side queue "
                                                                 "for a free replica slot (0: no queue, no per-"
                                                                 "replica in-flight limit); a full queue answers 429")
    queue_timeout_s: float = Field(60.0, gt=0, le=3600, description="longest wait in the router-side queue before "
                                                                    "a 503, seconds")
    replica_load: Literal["requests", "prefill-tokens"] = Field(
        "prefill-tokens", description="how the router ranks the replicas of one variant: 'requests' (least outstanding "
        "requests) or 'prefill-tokens' (least pending prefill tokens, i.e. prompt tokens routed to the replica "
        "whose first output token has not arrived, then least outstanding requests)")


class VariantConfig(_Strict):
    """How to start one deployment variant's replicas (engine arguments)."""

    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description="weights/activations")
    quantization: str | None = Field(None, description="engine quantization method (GPU), e.g. 'awq'")
    tensor_parallel_size: int = Field(1, ge=1, le=8, description="TP degree (devices per pipeline stage)")
    pipeline_parallel_size: int = Field(1, ge=1, le=8, description="PP degree (pipeline stages)")
    max_num_seqs: int = Field(32, ge=1, le=1024, description="most sequences one replica runs at once")
    max_ongoing_requests: int | None = Field(
        None, ge=1, le=1024,
        description="most requests the router sends one replica at once (Ray Serve's max_ongoing_requests); "
        "more wait in the router-side queue, where a switch does not touch them and a replica that becomes "
        "ready takes them at once. None: max_num_seqs (the engine's batch limit). server.queue_max 0 turns the "
        "router-side queue and every in-flight limit off; the simulator does not model it (its limit is "
        "max_num_seqs)")
    max_model_len: int = Field(2048, ge=64, le=131072, description="context length: prompt + output tokens")
    max_num_batched_tokens: int | None = Field(None, ge=64, description="token budget of one engine step "
                                                                        "(None: the engine's default)")
    kv_cache_bytes: int | None = Field(None, gt=0, description="KV-cache memory per replica, bytes "
                                                               "(None: the engine's default)")
    precision: Literal["fp32", "bf16", "int8"] | None = Field(
        None, description="with model.path 'default': which checkpoint of the embedded model to serve, 'int8' "
        "(INT8 W8A8 compressed-tensors, vLLM-CPU's int8 kernel), 'fp32' or 'bf16'; built once into the cache. "
        "None: the default checkpoint")
    backend: ComponentConfig | None = Field(
        None, description="the backend this variant's replicas run on, {kind, params} (e.g. kind 'process' "
        "for an engine's own OpenAI server); None: the config's top-level `backend`")


class ClassesConfig(_Strict):
    """Request classes: buckets over (prompt tokens, output tokens); see :class:`~oserve.types.ClassScheme`.

    Names default to ``short-in``/``long-in`` (two buckets) or ``in0``, ``in1``...; expected lengths
    default to bucket midpoints (the top bucket's is 1.5x its lower edge). Left entirely at the
    defaults, the scheme is :data:`~oserve.types.DEFAULT_SCHEME`.
    """

    input_edges: list[int] = Field([2048], description="interior edges over prompt tokens")
    output_edges: list[int] = Field([256], description="interior edges over output tokens")
    input_names: list[str] | None = Field(None, description="prompt bucket names (len(input_edges) + 1)")
    output_names: list[str] | None = Field(None, description="output bucket names (len(output_edges) + 1)")
    expected_input_tokens: list[int] | None = Field(None, description="representative prompt tokens per bucket")
    expected_output_tokens: list[int] | None = Field(None, description="representative output tokens per bucket")
    min_quality: dict[str, float] = Field(
        default_factory=dict, description="per class name ('<input name>/<output name>'), the lowest variant "
        "quality score (0-1, top-1 agreement with fp32, see docs/profiles.md) that may serve it; absent: any")

    def to_scheme(self) -> ClassScheme:
        """The :class:`~oserve.types.ClassScheme`.

        Raises:
            ConfigError: edges not increasing, or name/length lists of the wrong size (``classes.<field>``).
        """
        if self == ClassesConfig():
            return DEFAULT_SCHEME
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
                min_quality=tuple(self.min_quality.items()),
            )
        except ConfigError as exc:
            raise ConfigError(f"classes: {exc}", field=f"classes.{exc.field}", allowed=exc.allowed) from exc


class ParkingConfig(_Strict):
    """Parked (warm) replicas: started and warm but given no traffic; the planner activates one by a
    wake plus a routing shift instead of a cold start (see docs/orchestrator.md, "Parked replicas")."""

    keep_warm: dict[str, Annotated[int, Field(ge=0)]] = Field(
        default_factory=dict, description="variant -> replicas kept started over the cluster (active + parked); "
                                          "the ones the plan does not route to are parked")
    wake_time_s: dict[str, Annotated[float, Field(ge=0, allow_inf_nan=False)]] = Field(
        default_factory=dict, description="variant -> decision-to-serving time of a parked replica, s (the "
                                          "planner's switch cost of activating it); default: the profile "
                                          "table's wake_time_s, else 1 s")


class SurgeConfig(_Strict):
    """Surge checks between control ticks: re-plan at once when the last ``window_s`` seconds of arrivals
    load the current plan above ``capacity_factor`` of its table capacity (see docs/orchestrator.md,
    "Surge checks"; :mod:`oserve.control.surge`)."""

    check_interval_s: float = Field(1.0, ge=0.1, allow_inf_nan=False,
                                    description="time between surge checks, s (>= 0.1: the arrival history is per second)")
    window_s: int = Field(5, ge=1, description="short window of per-second arrivals a check reads, s")
    capacity_factor: float = Field(
        1.0, gt=0, allow_inf_nan=False,
        description="a surge is routed load above this fraction of the current plan's table capacity within SLO")
    min_arrivals: int = Field(8, ge=1, description="requests the short window must hold for a surge")
    min_gap_s: float = Field(2.0, ge=0, allow_inf_nan=False,
                             description="shortest time from the previous decision to a surge decision, s")
    growth_factor: float = Field(
        1.0, ge=1, le=100, allow_inf_nan=False,
        description="a surge decision plans for its rates times this (>= 1): a burst is still rising when it is "
                    "detected, and a plan for its first seconds is outgrown within seconds (a second switch that "
                    "hands over what the replicas it drains took meanwhile); above 1 trades some full-precision "
                    "share for one switch; at most 100")


class OrchestratorConfig(_Strict):
    """The control loop of ``oserve serve``: forecast, plan, switch every ``control_interval_s``."""

    table: str = Field(..., description="profile table (JSON) path, relative to the config file")
    forecaster: ComponentConfig = Field(
        default_factory=lambda: ComponentConfig(kind="default"),
        description="'default' (ewma-auto, guarded, spike-aware: the backtest winner, see docs/forecasting.md) "
                    "or any registered forecaster name")
    planner: ComponentConfig = Field(default_factory=lambda: ComponentConfig(kind="milp"),
                                     description="registered planner name (default milp)")
    slo: SLO = Field(default_factory=SLO, description="TTFT/TPOT targets goodput counts against")
    recompute_capacities: bool = Field(
        False, description="recompute each variant's per-class capacity from the table's iteration-time model at "
                           "this config's class lengths (classes.expected_input_tokens / expected_output_tokens) "
                           "and slo (oserve.profiles.rescore) instead of using the capacities stored in the table, "
                           "which were made at the profiling config's lengths and SLO")
    control_interval_s: float = Field(10.0, gt=0, description="time between control ticks, s")
    horizon_s: float = Field(30.0, gt=0, description="forecast horizon, s")
    drain_timeout_s: float = Field(30.0, ge=0, allow_inf_nan=False,
                                   description="a draining replica's requests are aborted after, s")
    min_history: int = Field(6, ge=1, description="history bins before the forecaster is fitted")
    history_bin_s: float = Field(1.0, gt=0, description="rate-history bin handed to the forecaster, s")
    hysteresis: HysteresisConfig = Field(default_factory=lambda: HysteresisConfig(),
                                         description="switch rule: a switch must pay for itself over horizon_s")
    cluster_refresh_s: float = Field(
        5.0, gt=0, description="how often a backend that discovers its nodes (e.g. ray) is asked for them; a node "
                               "that joined or left makes the orchestrator re-plan at once, s")
    parking: ParkingConfig | None = Field(None, description="parked (warm) replicas; None: none are kept")
    surge: SurgeConfig | None = Field(None, description="surge checks between control ticks; None: off")
    migrate_on_drain: bool = Field(
        False, description="a replica a switch drains hands its in-flight requests over at once: each resumes on "
                           "another replica from its last token (prompt + output so far prefilled again) instead "
                           "of finishing in place for up to drain_timeout_s")
    migration_grace_s: float = Field(
        0.0, ge=0, allow_inf_nan=False, description="with migrate_on_drain: how long a drained replica lets its in-flight requests "
                               "finish in place before the rest are handed over, s (0: all at once). Requests "
                               "that finish within it are not interrupted; the old and new engines share the "
                               "core meanwhile")

    @model_validator(mode="after")
    def _grace_needs_migration(self) -> OrchestratorConfig:
        check_migration_grace(self.migrate_on_drain, self.migration_grace_s)
        return self


def check_migration_grace(migrate_on_drain: bool, migration_grace_s: float) -> None:
    """A migration grace only applies to migrating drains; set without them it would be silently ignored.

    Raises:
        ValueError: ``migration_grace_s`` > 0 with ``migrate_on_drain`` false (reported as a ConfigError
            naming the section).
    """
    if migration_grace_s > 0 and not migrate_on_drain:
        raise ValueError(f"migration_grace_s is {migration_grace_s:g} s but migrate_on_drain is false: the grace "
                         "applies only to migrating drains (set migrate_on_drain: true, or drop migration_grace_s; "
                         "without migration drains wait up to drain_timeout_s)")


class ServeConfig(_Strict):
    """The ``oserve serve`` file (see the module docstring for an example)."""

    model: ModelConfig = Field(default_factory=ModelConfig, description="the served model")
    server: ServerConfig = Field(default_factory=ServerConfig, description="the HTTP endpoint")
    backend: ComponentConfig = Field(default_factory=lambda: ComponentConfig(kind="vllm"),
                                     description="engine backend: {kind: vllm|fake|<registered>, params: {...}}")
    cluster: ClusterConfig = Field(..., description="the machines")
    variants: dict[str, VariantConfig] = Field(..., min_length=1, description="variant name -> engine arguments")
    deployment: list[ReplicaPlacement] = Field(..., min_length=1, description="initial replicas")
    classes: ClassesConfig = Field(default_factory=ClassesConfig, description="request classes")
    orchestrator: OrchestratorConfig | None = Field(None, description="control loop; None: a static deployment")
    base_dir: str = Field(".", description="folder relative paths resolve against (set by load_config)")

    @model_validator(mode="after")
    def _check_references(self) -> ServeConfig:
        nodes = {n.name: n for n in self.cluster_spec.nodes}
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
                raise ValueError(f"deployment[{i}].device_ids {list(rep.device_ids)} must be ids in "
                                 f"[0, {node.devices})")
        parking = self.orchestrator.parking if self.orchestrator is not None else None
        for key, names in ((("keep_warm", parking.keep_warm), ("wake_time_s", parking.wake_time_s)) if parking else ()):
            for name in names:
                if name not in self.variants:
                    raise ValueError(f"orchestrator.parking.{key} names variant {name!r}, not one of "
                                     f"{sorted(self.variants)}")
        return self

    @property
    def cluster_spec(self) -> ClusterSpec:
        """The cluster as the planners see it."""
        return self.cluster.spec()

    def resolve(self, path: str) -> Path:
        """``path`` if absolute, else relative to the config file's folder."""
        p = Path(path)
        return p if p.is_absolute() else Path(self.base_dir) / p

    def initial_plan(self) -> Plan:
        """The configured deployment as a plan (requests of every class spread over all replicas)."""
        return Plan(replicas=list(self.deployment), reason="initial deployment from the config", planner="config")


def _format_validation_error(exc: ValidationError, source: str) -> ConfigError:
    first = exc.errors()[0]
    field = ".".join(str(p) for p in first.get("loc", ()))
    ctx = first.get("ctx") or {}
    allowed = ", ".join(f"{k}={v}" for k, v in ctx.items() if k != "error") or None
    lines = [f"{'.'.join(str(p) for p in e.get('loc', ())) or '<root>'}: {e['msg']}" for e in exc.errors()]
    return ConfigError(f"invalid config {source}: " + "; ".join(lines), field=field or None, allowed=allowed)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, setting ``base_dir`` to the file's folder unless the file sets it.

    Raises:
        ConfigError: unreadable file, invalid YAML, or a top level that is not a mapping.
    """
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:  # missing, binary or not YAML
        raise ConfigError(f"cannot read config {p}: {exc}", field="config", allowed="a readable YAML file") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"config {p} must be a mapping at the top level", field="<root>", allowed="a mapping")
    return raw


def validate(model: type[M], raw: dict[str, Any], source: str) -> M:
    """``model.model_validate(raw)``, a validation error turned into a :class:`ConfigError`.

    Raises:
        ConfigError: a field out of range; the message names every bad field path, ``field`` the first.
    """
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise _format_validation_error(exc, source) from exc


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> ServeConfig:
    """Read and validate a serve config.

    Args:
        path: YAML file.
        overrides: top-level keys replacing those of the file (used by the CLI and tests).

    Raises:
        ConfigError: unreadable YAML, or a field out of range (the message names the field path
            and what is allowed).
    """
    p = Path(path)
    cfg = load_yaml_model(p, ServeConfig, overrides, defaults={"base_dir": str(p.resolve().parent)})
    if os.environ.get("OSERVE_API_KEY") and not cfg.server.api_key:
        cfg = cfg.model_copy(update={"server": cfg.server.model_copy(update={"api_key": os.environ["OSERVE_API_KEY"]})})
    return cfg


def load_plan_config(path: str | Path) -> PlanConfig:
    """Read an ``oserve plan`` cluster file (``nodes`` and an optional ``planner``).

    Raises:
        ConfigError: unreadable file, invalid YAML, repeated node names or a field out of range (one
            line with the file and line).
    """
    return load_yaml_model(path, PlanConfig)
