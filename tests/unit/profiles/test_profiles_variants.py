"""Variant validation, names, memory accounting and the catalogue."""

from __future__ import annotations

import pytest

from oserve.errors import ConfigError
from oserve.profiles.variants import MODELS, Variant, catalogue, get_model


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"model": "llama-3-8b", "precision": "fp8", "device_type": "a100-80gb"}, "precision"),
        ({"model": "llama-3-8b", "kv_cache_dtype": "fp8", "device_type": "a100-40gb"}, "kv_cache_dtype"),
        ({"model": "smollm2-135m", "tp": 2, "device_type": "a100-80gb", "max_model_len": 2048}, "tp"),
        # qwen2-7b: 28 heads, 4 KV heads; tp=7 divides the heads but neither divides nor is a multiple of 4
        ({"model": "qwen2-7b", "tp": 7, "device_type": "h100-sxm"}, "tp"),
        ({"model": "llama-2-70b", "precision": "fp16", "tp": 1, "device_type": "a100-80gb"}, "tp"),
        ({"model": "llama-3-8b", "tp": 2, "devices_per_replica": 4, "device_type": "a100-80gb"}, "devices_per_replica"),
        ({"model": "llama-3-8b", "precision": "int4", "device_type": "cpu"}, "precision"),
        ({"model": "smollm2-135m", "precision": "fp32", "tp": 2, "device_type": "cpu"}, "tp"),
        ({"model": "llama-2-7b", "max_model_len": 8192, "device_type": "a100-80gb"}, "max_model_len"),
        ({"model": "llama-3-8b", "kv_cache_bytes": 80 * 1024**3, "device_type": "a100-80gb"}, "kv_cache_bytes"),
        ({"model": "llama-3-8b", "max_num_seqs": 512, "max_num_batched_tokens": 256}, "max_num_batched_tokens"),
        ({"model": "llama-3-8b", "tp": 0}, "tp"),
        ({"model": "llama-3-8b", "precision": "fp7"}, "precision"),
        ({"model": "llama-3-8b", "device_type": "tpu-v9"}, "device_type"),
        ({"model": "gpt-9"}, "model"),
    ],
)
def test_variant_rejects_impossible(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError) as ei:
        Variant(**kwargs)
    assert ei.value.field == field


def test_kv_cache_too_small_for_one_sequence_is_rejected() -> None:
    # llama-2-70b int8 on one 40 GB A100 does not even hold the weights; on 80 GB it fits, but a
    # tiny explicit KV cache cannot hold one 4096-token sequence.
    with pytest.raises(ConfigError) as ei:
        Variant(model="llama-2-70b", precision="int8", device_type="a100-80gb", kv_cache_bytes=1024**3)
    assert ei.value.field == "max_model_len"


def test_names_are_stable_and_distinct() -> None:
    assert Variant(model="llama-3-8b", tp=2).name == "llama-3-8b-fp16-tp2"
    assert Variant(model="llama-2-70b", precision="int4", tp=4, pp=2).name == "llama-2-70b-int4-tp4-pp2"
    cpu = Variant(model="smollm2-135m", precision="bf16", device_type="cpu", devices_per_replica=2, max_num_seqs=8,
                  max_model_len=2048)
    assert cpu.name == "smollm2-135m-bf16-2c-s8"


def test_architecture_numbers() -> None:
    smol = get_model("smollm2-135m")
    # 30 layers x (QKV + O + gated MLP) + tied 49152 x 576 embedding ~ 134.5 M parameters
    assert smol.linear_params + smol.embedding_params == pytest.approx(smol.params, rel=0.01)
    l7 = MODELS["llama-2-7b"]
    assert l7.linear_params + l7.embedding_params == pytest.approx(l7.params, rel=0.01)
    assert l7.kv_bytes_per_token(2) == 2 * 32 * 4096 * 2  # 512 KiB per token
    assert MODELS["llama-2-70b"].kv_heads == 8


def test_memory_accounting_int4_smaller_than_fp16() -> None:
    fp16 = Variant(model="llama-3-8b", precision="fp16")
    int4 = Variant(model="llama-3-8b", precision="int4")
    assert int4.weights_bytes < 0.4 * fp16.weights_bytes
    assert int4.kv_capacity_tokens > fp16.kv_capacity_tokens
    assert fp16.memory_per_device_bytes <= fp16.usable_per_device_bytes + 1


def test_catalogue_expands_only_valid_variants() -> None:
    names = {v.name for v in catalogue("llama-2-70b", "a100-80gb")}
    assert "llama-2-70b-fp16-tp1" not in names  # 138 GB of weights on one 80 GB GPU
    assert not any("-fp8-" in n for n in names)  # A100 has no FP8
    assert {"llama-2-70b-fp16-tp2", "llama-2-70b-int8-tp1", "llama-2-70b-int4-tp8"} <= names
    h100 = {v.name for v in catalogue("llama-3-8b", "h100-sxm")}
    assert "llama-3-8b-fp8-tp1" in h100
    l4 = {v.name for v in catalogue("llama-3-8b", "l4", precisions=("fp8",), tps=(1,))}
    assert l4 == {"llama-3-8b-fp8-tp1"}  # Ada has FP8 tensor cores
