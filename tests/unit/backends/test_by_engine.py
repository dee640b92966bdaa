"""Variants name their engine; EngineByVariant starts each replica on its engine's backend."""

from __future__ import annotations

import pytest

from oserve.backends.base import ReplicaSpec
from oserve.backends.by_engine import EngineByVariant
from oserve.errors import ConfigError
from oserve.profiles.variants import Variant
from oserve.testing.fake_backend import FakeBackend


def test_a_variant_names_its_engine_and_the_name_tells_them_apart() -> None:
    vllm = Variant(model="llama-3-8b", precision="fp16", tp=1, device_type="a100-80gb")
    trt = Variant(model="llama-3-8b", precision="fp16", tp=1, device_type="a100-80gb", engine="trtllm")
    assert vllm.engine == "vllm" and vllm.name == "llama-3-8b-fp16-tp1"
    assert trt.name == "llama-3-8b-fp16-tp1-trtllm"
    cpu = Variant(model="smollm2-135m", precision="fp32", device_type="cpu", devices_per_replica=1,
                  max_num_seqs=8, max_model_len=2048, engine="process-vllm")
    assert cpu.name == "smollm2-135m-fp32-1c-s8-process-vllm"
    with pytest.raises(ConfigError) as info:
        Variant(model="llama-3-8b", engine="Bad Engine!")
    assert info.value.field == "engine"


async def test_replicas_start_on_their_variants_engine() -> None:
    a, b = FakeBackend(), FakeBackend()
    backend = EngineByVariant({"vllm": a, "trtllm": b}, engine_of={"v-trt": "trtllm"})
    r1 = await backend.start_replica(ReplicaSpec(variant="v", model="m", served_model_name="m"), "r1")
    r2 = await backend.start_replica(ReplicaSpec(variant="v-trt", model="m", served_model_name="m"), "r2")
    assert set(a.replicas) == {"r1"} and set(b.replicas) == {"r2"}
    await r1.stop()
    await r2.stop()


def test_from_variants_builds_one_backend_per_engine() -> None:
    made: list[str] = []

    def make(name: str) -> FakeBackend:
        made.append(name)
        return FakeBackend()

    vs = [Variant(model="llama-3-8b", device_type="a100-80gb"),
          Variant(model="llama-3-8b", device_type="a100-80gb", engine="trtllm")]
    backend = EngineByVariant.from_variants(vs, make)
    assert sorted(made) == ["trtllm", "vllm"]
    assert backend.backend_for("llama-3-8b-fp16-tp1-trtllm") is backend.backends["trtllm"]


def test_an_engine_without_backend_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        EngineByVariant({"vllm": FakeBackend()}, engine_of={"x": "sglang"})
    assert info.value.field == "variants.x.engine" and info.value.allowed == "vllm"
