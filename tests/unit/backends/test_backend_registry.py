"""The backend registry: built-in names, run-time registration, unknown and duplicate names."""

from __future__ import annotations

import pytest

from oserve.backends.base import Backend, ReplicaSpec
from oserve.backends.registry import available_backends, backend_class, make_backend, register_backend
from oserve.compose import build_backend
from oserve.config import ComponentConfig
from oserve.errors import ConfigError
from oserve.testing.fake_backend import FakeBackend


class _NullBackend(Backend):
    """A backend that starts nothing (registration tests only)."""

    def __init__(self, start_timeout_s: float = 1.0) -> None:
        self.start_timeout_s = start_timeout_s

    async def start_replica(self, spec: ReplicaSpec, replica_id: str):  # pragma: no cover - never started
        raise NotImplementedError


def test_builtin_names_are_listed_and_fake_is_lazy_and_light() -> None:
    assert {"vllm", "fake"} <= set(available_backends())
    backend = make_backend("fake", options={"token_delay_s": 0.01})
    assert isinstance(backend, FakeBackend) and backend.options.token_delay_s == 0.01
    assert backend.needs_checkpoint is False
    assert backend_class("fake") is FakeBackend


def test_unknown_backend_lists_the_allowed_names() -> None:
    with pytest.raises(ConfigError) as info:
        make_backend("tgi")
    assert info.value.field == "backend.kind" and "fake" in str(info.value.allowed)


def test_duplicate_and_bad_registrations_are_refused() -> None:
    with pytest.raises(ConfigError, match="already registered"):
        register_backend("fake", _NullBackend)
    with pytest.raises(ConfigError, match="not a subclass"):
        register_backend("not-a-backend", object)  # type: ignore[arg-type]
    register_backend("null-test", _NullBackend)
    with pytest.raises(ConfigError, match="already registered"):
        register_backend("null-test", _NullBackend)
    built = build_backend(ComponentConfig(kind="null-test", params={"start_timeout_s": 2.0}),
                          allow_core_sharing=True)  # a default the constructor does not take is dropped
    assert isinstance(built, _NullBackend) and built.start_timeout_s == 2.0


def test_bad_params_name_the_backend() -> None:
    with pytest.raises(ConfigError, match="fake") as info:
        make_backend("fake", colour="red")
    assert info.value.field == "backend.params"
    with pytest.raises(ConfigError, match="options"):
        make_backend("fake", options={"colour": "red"})


def test_process_and_trtllm_are_builtin_names() -> None:
    from oserve.backends.process import ProcessBackend
    from oserve.backends.trtllm import TRTLLMBackend

    assert {"process", "trtllm"} <= set(available_backends())
    assert backend_class("process") is ProcessBackend and backend_class("trtllm") is TRTLLMBackend


def _serve_config(variants: dict) -> object:
    from oserve.config import ServeConfig

    return ServeConfig.model_validate({
        "model": {"served_name": "m", "path": "unused"},
        "backend": {"kind": "fake"},
        "cluster": {"nodes": [{"name": "local", "device_type": "cpu", "devices": 2,
                               "device_memory_bytes": 2**32}]},
        "variants": variants,
        "deployment": [{"variant": name, "node": "local", "device_ids": [i]} for i, name in enumerate(variants)],
    })


def test_a_variant_can_choose_its_own_backend() -> None:
    from oserve.backends.by_engine import EngineByVariant
    from oserve.backends.process import ProcessBackend
    from oserve.compose import build_serve_backend

    one = build_serve_backend(_serve_config({"a": {}, "b": {}}))
    assert isinstance(one, FakeBackend)  # no variant names a backend: the config's backend itself
    mixed = build_serve_backend(_serve_config({"a": {}, "b": {"backend": {"kind": "process",
                                                                        "params": {"template": "vllm"}}}}))
    assert isinstance(mixed, EngineByVariant)
    assert isinstance(mixed.backend_for("a"), FakeBackend)
    assert isinstance(mixed.backend_for("b"), ProcessBackend)
    with pytest.raises(ConfigError) as info:
        build_serve_backend(_serve_config({"a": {"backend": {"kind": "tgi"}}}))
    assert info.value.field == "variants.a.backend"


def test_catalogue_engine_names_map_to_backends() -> None:
    from oserve.backends.process import ProcessBackend
    from oserve.compose import backend_for_engine

    assert isinstance(backend_for_engine("vllm", "fake"), FakeBackend)
    assert isinstance(backend_for_engine("process-sglang"), ProcessBackend)
    with pytest.raises(ConfigError):
        backend_for_engine("process-nosuchengine")


def test_a_variant_precision_needs_the_embedded_model() -> None:
    from oserve.compose import build_templates

    cfg = _serve_config({"a": {"precision": "int8"}})
    with pytest.raises(ConfigError) as info:
        build_templates(cfg, "unused")  # model.path is not 'default'
    assert info.value.field == "variants.a.precision"


def test_a_variant_router_limit_reaches_its_replica_spec_but_not_the_engine_key() -> None:
    from oserve.backends.warm_pool import _key
    from oserve.compose import build_templates

    cfg = _serve_config({"a": {"max_num_seqs": 32, "max_ongoing_requests": 6}, "b": {"max_num_seqs": 32}})
    specs = build_templates(cfg, "unused")
    assert specs["a"].max_ongoing_requests == 6 and specs["b"].max_ongoing_requests is None
    # the warm pool shares one engine between specs that differ only in the router-side limit
    assert _key(specs["a"]) == _key(specs["a"].model_copy(update={"max_ongoing_requests": None}))
    assert _key(specs["a"]) != _key(specs["a"].model_copy(update={"max_num_seqs": 8}))
