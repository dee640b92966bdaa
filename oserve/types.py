"""Shared value types: cluster, demand, plan, SLO, plan score and request classes.

Pure values (frozen pydantic models and dataclasses) with no I/O, exchanged by the planners, the
forecasters' consumers, the profiles, the simulator, the control loop and the configs. They live in
one module that imports nothing else from oserve but :mod:`oserve.errors`, so every layer can use
them without import cycles.

Request classes: Request classes: buckets over (input tokens, output tokens), the spatial axis of a workload.

The default scheme splits input at 2,048 tokens and output at 256 tokens, giving four classes
(``short-in/short-out``, ``short-in/long-out``, ``long-in/short-out``, ``long-in/long-out``). On the
Azure LLM inference 2023 traces this separates the code service (prefill heavy, p50 output 13
tokens) from the conversation service (p50 output 129 tokens).

At admission a request is classified by its prompt's token count and by ``max_tokens``; when a
request gives no ``max_tokens``, the expected output of the class its input falls into is used
(``expected_output_tokens`` of the short-output class of that input row).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from oserve.errors import ConfigError

__all__ = [
    "NodeSpec", "ClusterSpec", "Demand", "ReplicaPlacement", "Plan", "SLO", "PlanScore",
    "RequestClass", "ClassScheme", "DEFAULT_SCHEME",
]


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
    """Per-class arrival rate to plan for, req/s (forecast or observed)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    rates_rps: dict[str, float]
    min_quality: dict[str, Annotated[float, Field(ge=0, le=1)]] = Field(
        default_factory=dict, description="per class, the lowest variant quality score (0-1, "
                                          "oserve.profiles.quality) that may serve it; classes absent: any")

    @field_validator("rates_rps", "min_quality", mode="before")
    @classmethod
    def _numbers_only(cls, value: Any) -> Any:
        # pydantic's lax mode would read true as 1 req/s and "3" as 3 req/s; numpy numbers stay accepted
        items = value.items() if hasattr(value, "items") else ()
        bad = sorted(str(c) for c, r in items if isinstance(r, bool | np.bool_ | str | bytes))
        if bad:
            raise ValueError(f"values must be numbers, not booleans or strings (class(es) {', '.join(bad)})")
        return value

class ReplicaPlacement(BaseModel):
    """One replica of a variant on devices of a node (active in ``Plan.replicas``, parked in ``Plan.parked``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    variant: str
    node: str
    device_ids: tuple[int, ...]


class Plan(BaseModel):
    """A deployment: replicas placed on devices plus per-class routing weights.

    Attributes:
        replicas: replicas to run and route to (active replicas).
        parked: replicas kept started and warm but given no traffic (parked; see
            :mod:`oserve.policies.parking`); activating one is a wake plus a routing shift, not a
            cold start. Routing never names a variant only through a parked replica.
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
    parked: list[ReplicaPlacement] = Field(
        default_factory=list,
        description="replicas kept started and warm but given no traffic (parked); on CPU they hold memory "
                    "and no core, on GPU (vLLM sleep level 1) host memory only")
    routing: dict[str, dict[str, float]] = Field(default_factory=dict)
    predicted_goodput_rps: float = 0.0
    slo_attainment: float = 1.0
    memory_used_bytes: dict[str, int] = Field(default_factory=dict)
    objective: float = 0.0
    reason: str = ""
    planner: str = ""
    admit_rps: dict[str, float] = Field(
        default_factory=dict,
        description="per class, the req/s the plan serves within SLO where demand exceeds it (advisory: no "
                    "router or simulator enforces it, and evaluate does not credit it); classes absent are served in full")
    devices_used: int = Field(0, description="devices the replicas occupy")
    optimal: bool | None = Field(
        None, description="True when the planner proved the plan optimal for the shared objective (MILP solved "
                          "to its gap); None when the planner makes no such claim")
    quality_restore: bool = Field(
        False, description="the plan only restores quality: the current replicas already serve the demand, so a "
                           "switch to it is not urgent and the replicas it drains let their in-flight requests "
                           "finish (up to the drain timeout) instead of handing them over (migrate_on_drain)")

    def parked_counts(self) -> dict[tuple[str, str], int]:
        """Number of parked replicas per ``(variant, node)``."""
        out: dict[tuple[str, str], int] = {}
        for r in self.parked:
            out[(r.variant, r.node)] = out.get((r.variant, r.node), 0) + 1
        return out

    def replica_counts(self) -> dict[str, int]:
        """Number of replicas per variant."""
        out: dict[str, int] = {}
        for r in self.replicas:
            out[r.variant] = out.get(r.variant, 0) + 1
        return out


class SLO(BaseModel):
    """Latency targets a request must meet to count towards goodput (p99 targets, seconds)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    ttft_s: float = Field(2.0, gt=0, description="time to first token target, s")
    tpot_s: float = Field(0.2, gt=0, description="time per output token target, s")


class PlanScore(BaseModel):
    """A plan's predicted quality under :func:`evaluate`.

    Attributes:
        goodput_rps: demand served within SLO, req/s.
        served_rps: per class, req/s served within SLO.
        slo_attainment: goodput / total demand (1.0 when demand is zero).
        memory_used_bytes: per ``"node:device"``, bytes planned on that device.
        devices_used: devices the plan's replicas occupy.
        utilization: per variant, routed load in replica-time / replicas (> 1 means overloaded).
        switch_start_s: summed start time of replicas started or stopped relative to ``current``, s.
        switch_cost_rps: ``switch_cost_rps_per_s * switch_start_s``.
        device_cost_rps: ``device_cost_rps * devices_used`` (0 with ``fill_idle_devices``).
        planned_capacity_rps: the plan's headroom, the largest rate of the demand mix its replicas carry
            together, req/s (:func:`oserve.policies.problem.planned_capacity`).
        spare_capacity_rps: the replicas' replica time left after their routed load, times their capacity
            for the demand mix, req/s (see the module docstring).
        capacity_value_rps: ``spare_capacity_value * planned_capacity_rps`` (0 without ``fill_idle_devices``).
        quality_cost_rps: ``quality_cost_rps`` weight x req/s served x (1 - quality score of the variant).
        objective: ``goodput_rps - quality_cost_rps + capacity_value_rps - switch_cost_rps - device_cost_rps``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    goodput_rps: float
    served_rps: dict[str, float] = Field(default_factory=dict)
    slo_attainment: float
    memory_used_bytes: dict[str, int] = Field(default_factory=dict)
    devices_used: int
    utilization: dict[str, float] = Field(default_factory=dict)
    switch_start_s: float
    switch_cost_rps: float
    device_cost_rps: float
    objective: float
    planned_capacity_rps: float = 0.0
    spare_capacity_rps: float = 0.0
    capacity_value_rps: float = 0.0
    quality_cost_rps: float = 0.0


@dataclass(frozen=True)
class RequestClass:
    """One bucket of requests.

    Attributes:
        name: stable identifier, e.g. ``"short-in/short-out"``.
        index: position in the scheme (row/column index of per-class arrays).
        input_range: ``[lo, hi)`` input tokens.
        output_range: ``[lo, hi)`` output tokens.
        expected_input_tokens: representative input length (tokens) used by profiles/planners.
        expected_output_tokens: representative output length (tokens).
        min_quality: lowest quality score (0-1, :mod:`oserve.profiles.quality`) of a variant that may
            serve this class; 0 means any variant.
    """

    name: str
    index: int
    input_range: tuple[int, int]
    output_range: tuple[int, int]
    expected_input_tokens: int
    expected_output_tokens: int
    min_quality: float = 0.0


@dataclass(frozen=True)
class ClassScheme:
    """A grid of request classes defined by input and output token edges.

    Args:
        input_edges: increasing interior edges over input tokens, e.g. ``(2048,)``.
        output_edges: increasing interior edges over output tokens, e.g. ``(256,)``.
        input_names / output_names: labels per bucket (len(edges) + 1 each).
        expected_input_tokens / expected_output_tokens: representative lengths per bucket, tokens,
            each inside its own bucket (``[lo, hi)``; the top bucket is open above).
        min_quality: ``(class name, minimum quality score 0-1)`` pairs; classes not named accept any
            variant.

    Raises:
        ConfigError: edges not strictly increasing or not positive, label counts off, an expected
            length below 1 token or outside its own bucket ``[lo, hi)`` (the top bucket is open
            above), or a ``min_quality`` entry naming an unknown class or outside 0-1.
    """

    input_edges: tuple[int, ...] = (2048,)
    output_edges: tuple[int, ...] = (256,)
    input_names: tuple[str, ...] = ("short-in", "long-in")
    output_names: tuple[str, ...] = ("short-out", "long-out")
    expected_input_tokens: tuple[int, ...] = (1024, 4096)
    expected_output_tokens: tuple[int, ...] = (64, 512)
    min_quality: tuple[tuple[str, float], ...] = ()
    classes: tuple[RequestClass, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        for axis, edges, names, expected in (
            ("input", self.input_edges, self.input_names, self.expected_input_tokens),
            ("output", self.output_edges, self.output_names, self.expected_output_tokens),
        ):
            if any(e <= 0 for e in edges) or any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
                raise ConfigError(
                    f"{axis}_edges must be positive and strictly increasing, got {list(edges)}",
                    field=f"{axis}_edges", allowed="strictly increasing positive integers",
                )
            if len(names) != len(edges) + 1 or len(expected) != len(edges) + 1:
                raise ConfigError(
                    f"{axis}_names and expected_{axis}_tokens need {len(edges) + 1} entries",
                    field=f"{axis}_names", allowed=f"exactly {len(edges) + 1} entries",
                )
            if any(not x >= 1 for x in expected):  # capacities are computed at these lengths
                raise ConfigError(
                    f"expected_{axis}_tokens must be >= 1 token each, got {list(expected)}",
                    field=f"expected_{axis}_tokens", allowed=">= 1 token per bucket",
                )
            bounds = [0, *edges]
            for k, x in enumerate(expected):  # a class's representative length lies in its own bucket
                lo, hi = bounds[k], (edges[k] if k < len(edges) else None)
                if x < lo or (hi is not None and x >= hi):
                    span = f"[{lo}, {hi})" if hi is not None else f"[{lo}, inf)"
                    raise ConfigError(
                        f"expected_{axis}_tokens[{k}] is {x} tokens, outside bucket {k} {span} of {axis}_edges "
                        f"{list(edges)}", field=f"expected_{axis}_tokens", allowed=f"bucket {k}: {span} tokens",
                    )
        names = [f"{i}/{o}" for i in self.input_names for o in self.output_names]
        min_q: dict[str, float] = {}
        for name, q in self.min_quality:
            if name not in names:
                raise ConfigError(f"min_quality names unknown class {name!r}", field=f"min_quality.{name}",
                                  allowed=", ".join(names))
            if not 0.0 <= float(q) <= 1.0:
                raise ConfigError(f"min_quality of {name!r} must be within 0-1, got {q}",
                                  field=f"min_quality.{name}", allowed="0 <= min_quality <= 1")
            min_q[name] = float(q)
        inf = 2**62
        in_b = [0, *self.input_edges, inf]
        out_b = [0, *self.output_edges, inf]
        classes = []
        for i, iname in enumerate(self.input_names):
            for j, oname in enumerate(self.output_names):
                classes.append(
                    RequestClass(
                        name=f"{iname}/{oname}",
                        index=len(classes),
                        input_range=(in_b[i], in_b[i + 1]),
                        output_range=(out_b[j], out_b[j + 1]),
                        expected_input_tokens=self.expected_input_tokens[i],
                        expected_output_tokens=self.expected_output_tokens[j],
                        min_quality=min_q.get(f"{iname}/{oname}", 0.0),
                    )
                )
        object.__setattr__(self, "classes", tuple(classes))

    @property
    def names(self) -> list[str]:
        """Class names in index order."""
        return [c.name for c in self.classes]

    @property
    def min_quality_by_class(self) -> dict[str, float]:
        """Per class name, its minimum quality score (only classes that set one): what a planner's
        ``Demand.min_quality`` takes."""
        return {c.name: c.min_quality for c in self.classes if c.min_quality > 0}

    def __len__(self) -> int:
        return len(self.classes)

    def by_name(self, name: str) -> RequestClass:
        """Return the class called ``name``. Raises ConfigError naming the known classes."""
        for c in self.classes:
            if c.name == name:
                return c
        raise ConfigError(f"unknown request class {name!r}", field="class", allowed=", ".join(self.names))

    def classify(self, input_tokens: int, output_tokens: int | None = None) -> RequestClass:
        """Classify one request.

        Args:
            input_tokens: prompt tokens (>= 0).
            output_tokens: ``max_tokens`` of the request, or None when absent: then the input
                row's first output bucket's expected length is used.
        """
        i = bisect.bisect_right(self.input_edges, max(0, int(input_tokens)))
        if output_tokens is None:
            output_tokens = self.expected_output_tokens[0]
        j = bisect.bisect_right(self.output_edges, max(0, int(output_tokens)))
        return self.classes[i * (len(self.output_edges) + 1) + j]

    def classify_many(self, input_tokens: np.ndarray, output_tokens: np.ndarray) -> np.ndarray:
        """Vectorised :meth:`classify`: arrays of shape ``(n,)`` -> class indices ``(n,)``."""
        i = np.searchsorted(np.asarray(self.input_edges), np.asarray(input_tokens), side="right")
        j = np.searchsorted(np.asarray(self.output_edges), np.asarray(output_tokens), side="right")
        return (i * (len(self.output_edges) + 1) + j).astype(np.int64)


DEFAULT_SCHEME = ClassScheme()
