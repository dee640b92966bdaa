"""Registry of forecasters by name: ``make("arima", log1p=True)``, ``register("mine", MyForecaster)``.

Third-party packages can also add forecasters through the ``oserve.forecasters`` entry-point group
(each entry point names a :class:`~oserve.forecast.base.Forecaster` subclass); those are loaded the
first time a name is not found among the registered ones.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

from oserve.errors import ConfigError
from oserve.forecast.base import Forecaster

__all__ = ["register", "make", "build", "available", "ENTRY_POINT_GROUP"]

ENTRY_POINT_GROUP = "oserve.forecasters"

_REGISTRY: dict[str, type[Forecaster]] = {}
_entry_points_loaded = False


def register(name: str, cls: type[Forecaster]) -> type[Forecaster]:
    """Register ``cls`` under ``name``.

    Args:
        name: registry name (non-empty string), e.g. ``"my-forecaster"``.
        cls: a subclass of :class:`Forecaster`.

    Returns:
        ``cls`` (so it can be used as ``register("x", X)`` at class definition).

    Raises:
        ConfigError: ``name`` empty or already registered, or ``cls`` not a Forecaster subclass.
    """
    if not isinstance(name, str) or not name:
        raise ConfigError(f"forecaster name must be a non-empty string, got {name!r}", field="name",
                          allowed="non-empty string")
    if not (isinstance(cls, type) and issubclass(cls, Forecaster)):
        raise ConfigError(f"cannot register {cls!r}: not a subclass of oserve.forecast.Forecaster", field="cls",
                          allowed="a Forecaster subclass")
    if name in _REGISTRY:
        raise ConfigError(f"forecaster name {name!r} is already registered (by {_REGISTRY[name].__name__})",
                          field="name", allowed=f"a name not in {sorted(_REGISTRY)}")
    _REGISTRY[name] = cls
    if "name" not in cls.__dict__:
        cls.name = name
    return cls


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in _REGISTRY:
            register(ep.name, ep.load())


def available() -> list[str]:
    """Registered forecaster names, sorted."""
    return sorted(_REGISTRY)


def make(name: str, **params: Any) -> Forecaster:
    """Build an unfitted forecaster by registry name.

    Args:
        name: one of :func:`available` (``"last"``, ``"ewma"``, ``"seasonal-naive"``, ``"arima"``,
            ``"ensemble"``, ``"guarded"``, ``"spike-guard"``, or a registered user name).
        **params: hyper-parameters of that forecaster's ``__init__``.

    Raises:
        ConfigError: unknown name (lists the known ones) or a bad hyper-parameter.
    """
    if name not in _REGISTRY:
        _load_entry_points()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown forecaster {name!r}", field="forecaster", allowed=", ".join(available()))
    cls = _REGISTRY[name]
    try:
        f = cls(**params)
    except TypeError as exc:
        raise ConfigError(f"bad parameters for forecaster {name!r}: {exc}", field=f"forecaster.{name}",
                          allowed=", ".join(cls._param_names()) or "no parameters") from exc
    f._validate_params()
    return f


def build(spec: str | Forecaster | tuple[str, dict[str, Any]] | dict[str, Any]) -> Forecaster:
    """Build a member forecaster from a name, ``(name, params)``, ``{"kind": ..., "params": {...}}`` (the
    config dialect) or an
    instance (cloned, so the caller's object is never fitted behind its back).

    Raises:
        ConfigError: an unknown name or bad parameters.
    """
    if isinstance(spec, Forecaster):
        return spec.clone()
    if isinstance(spec, str):
        return make(spec)
    if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], str) and isinstance(spec[1], dict):
        return make(spec[0], **spec[1])
    if isinstance(spec, dict) and isinstance(spec.get("kind"), str) and set(spec) <= {"kind", "params"}:
        return make(spec["kind"], **dict(spec.get("params") or {}))
    raise ConfigError(f"cannot build a forecaster from {spec!r}", field="members",
                      allowed="a name, (name, params), {'kind': ..., 'params': {...}} or a Forecaster")
