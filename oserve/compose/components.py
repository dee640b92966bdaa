"""Build components from ``{kind, params}`` configs through their registries.

The only place that turns a config's component names into objects: the backend, forecaster and
planner registries are looked up here, so ``oserve serve``, ``oserve simulate``, ``oserve plan``,
``oserve profile`` and the demo build every component the same way.
"""

from __future__ import annotations

from typing import Any

from oserve.backends.base import Backend, ReplicaSpec
from oserve.config import ComponentConfig, HysteresisConfig, ParkingConfig, ServeConfig
from oserve.errors import ConfigError
from oserve.forecast.base import Forecaster
from oserve.policies.base import Planner

__all__ = ["build_backend", "build_serve_backend", "backend_for_engine", "build_forecaster", "build_planner", "build_control_planner", "resolve_model_path", "build_templates",
           "needs_checkpoint"]


def _component(spec: ComponentConfig | str) -> ComponentConfig:
    return ComponentConfig(kind=spec) if isinstance(spec, str) else spec


def build_backend(spec: ComponentConfig | str, **defaults: Any) -> Backend:
    """The backend ``spec.kind`` of :mod:`oserve.backends.registry`, built with ``spec.params``.

    Args:
        spec: ``{kind, params}`` (or just the kind).
        **defaults: constructor arguments the caller supplies unless ``params`` sets them and the
            backend's constructor accepts them (e.g. ``allow_core_sharing`` for ``vllm``).

    Raises:
        ConfigError: unknown kind (lists the allowed ones) or parameters the backend does not accept.
    """
    import inspect

    from oserve.backends.registry import backend_class, make_backend

    spec = _component(spec)
    accepted = inspect.signature(backend_class(spec.kind).__init__).parameters
    extra = {k: v for k, v in defaults.items() if k in accepted and k not in spec.params}
    return make_backend(spec.kind, **{**extra, **spec.params})


def build_serve_backend(config: Any, **defaults: Any) -> Backend:
    """The backend of a serve config: ``config.backend``, or, when some variants name their own
    backend (``variants.<name>.backend``), an :class:`~oserve.backends.by_engine.EngineByVariant`
    that starts each replica on its variant's backend and the others on ``config.backend``.

    Args:
        config: a :class:`~oserve.config.ServeConfig`.
        **defaults: as for :func:`build_backend`.

    Raises:
        ConfigError: an unknown backend kind or parameter (the field names the variant).
    """
    from oserve.backends.by_engine import EngineByVariant

    own = {name: v.backend for name, v in config.variants.items() if v.backend is not None}
    default = build_backend(config.backend, **defaults)
    if not own:
        return default
    backends: dict[str, Backend] = {"default": default}
    for name, spec in own.items():
        try:
            backends[f"variant:{name}"] = build_backend(spec, **defaults)
        except ConfigError as e:
            raise ConfigError(str(e), field=f"variants.{name}.backend", allowed=e.allowed) from e
    return EngineByVariant(backends, engine_of={name: f"variant:{name}" for name in own}, default="default")


def backend_for_engine(engine: str, default: ComponentConfig | str = "vllm") -> Backend:
    """The backend of a catalogue variant's ``engine`` name (:attr:`oserve.profiles.variants.Variant.engine`).

    ``vllm`` is ``default`` (the config's backend); ``process-<template>`` is a
    :class:`~oserve.backends.process.ProcessBackend` on that launch template (``vllm``, ``sglang``,
    ``trtllm``); any other name is looked up in the backend registry.

    Raises:
        ConfigError: an unknown engine or template (lists the allowed ones).
    """
    if engine == "vllm":
        return build_backend(default)
    if engine.startswith("process-"):
        return build_backend(ComponentConfig(kind="process", params={"template": engine.removeprefix("process-")}))
    return build_backend(engine)


def build_forecaster(spec: ComponentConfig | str) -> Forecaster:
    """An unfitted forecaster of :mod:`oserve.forecast.registry` (``default`` is the live default).

    Raises:
        ConfigError: unknown kind (lists the allowed ones) or a bad hyper-parameter.
    """
    from oserve.forecast import make

    spec = _component(spec)
    return make(spec.kind, **spec.params)


def build_planner(spec: ComponentConfig | str) -> Planner:
    """A planner of the planner registry (:func:`oserve.policies.make_planner`).

    Raises:
        ConfigError: unknown kind (lists the allowed ones) or parameters the planner does not accept.
    """
    from oserve.policies import make_planner

    spec = _component(spec)
    return make_planner(spec.kind, **spec.params)


def build_control_planner(spec: ComponentConfig | str, hysteresis: HysteresisConfig | None,
                          horizon_s: float, parking: ParkingConfig | None = None, *,
                          parking_field: str = "orchestrator.parking") -> Any:
    """The control loop's planner: :func:`build_planner` wrapped in the hysteresis switch rule, then
    (with ``parking``) in :class:`oserve.policies.parking.ParkingPlanner`, which hands the inner rule a
    table where warm variants cost their wake time, so hysteresis weighs a wake, not a cold start.

    Args:
        spec: the configured planner.
        hysteresis: the switch rule (None or ``enabled: false``: the planner alone). The
            ``hysteresis`` and ``static`` planners are never wrapped.
        horizon_s: the control loop's forecast horizon, seconds (the gain of a switch is counted over it).
        parking: parked (warm) replicas to keep (None: none).
        parking_field: where ``parking`` sits in the config, for error messages
            (``control.parking`` in a simulate config).

    Raises:
        ConfigError: as :func:`build_planner`, or a threshold out of range.
    """
    from oserve.policies import HysteresisPlanner, StaticPlanner

    planner: Any = build_planner(spec)
    if not (hysteresis is None or not hysteresis.enabled or isinstance(planner, (HysteresisPlanner, StaticPlanner))):
        planner = HysteresisPlanner(planner, min_gain_fraction=hysteresis.min_gain_fraction,
                                    switch_cost_weight=hysteresis.switch_cost_weight, horizon_s=horizon_s)
    if parking is not None:
        from oserve.policies.parking import ParkingPlanner

        planner = ParkingPlanner(planner, parking.keep_warm, parking.wake_time_s, field=parking_field)
    return planner


def needs_checkpoint(backend: Backend) -> bool:
    """Whether ``backend``'s replicas load the configured checkpoint (False for fake/simulated ones)."""
    return bool(type(backend).needs_checkpoint)


def resolve_model_path(config: ServeConfig) -> str:
    """Checkpoint folder of the configured model (builds the embedded default once).

    Raises:
        ConfigError: ``model.path`` is not ``default`` and not a folder holding ``config.json``.
    """
    if config.model.path == "default":
        from oserve.backends.embedded_model import ensure_default_model

        return str(ensure_default_model())
    path = config.resolve(config.model.path)
    if not (path / "config.json").is_file():
        raise ConfigError(f"model.path {str(path)!r} is not a Hugging Face checkpoint folder (no config.json there)",
                          field="model.path", allowed="'default' or a folder holding config.json and the weights")
    return str(path)


def build_templates(config: ServeConfig, model_path: str) -> dict[str, ReplicaSpec]:
    """One :class:`ReplicaSpec` template per configured variant (placement filled in later).

    A variant with ``precision`` serves that checkpoint of the embedded model (built once).

    Raises:
        ConfigError: ``precision`` set with a ``model.path`` other than ``default``.
    """
    out = {}
    for name, v in config.variants.items():
        model = model_path
        if v.precision is not None:
            if config.model.path != "default":
                raise ConfigError(f"variant {name!r} sets precision, which selects a checkpoint of the embedded "
                                  "model; with your own model.path, give each precision its own config",
                                  field=f"variants.{name}.precision", allowed="None, or model.path 'default'")
            from oserve.backends.embedded_model import ensure_precision_checkpoint

            model = str(ensure_precision_checkpoint(v.precision))
        out[name] = ReplicaSpec(
            variant=name, model=model, served_model_name=config.model.served_name, dtype=v.dtype,
            quantization=v.quantization, tensor_parallel_size=v.tensor_parallel_size,
            pipeline_parallel_size=v.pipeline_parallel_size, max_num_seqs=v.max_num_seqs,
            max_model_len=v.max_model_len, max_num_batched_tokens=v.max_num_batched_tokens,
            kv_cache_bytes=v.kv_cache_bytes, max_ongoing_requests=v.max_ongoing_requests,
        )
    return out
