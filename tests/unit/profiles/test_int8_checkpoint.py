"""The INT8 W8A8 checkpoint writer, on a tiny random Llama (no engine; the real load is in integration)."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
from safetensors.torch import load_file  # noqa: E402

from oserve.backends.int8_checkpoint import (  # noqa: E402
    QUANTIZED_LINEAR,
    int8_checkpoint_ok,
    quantization_config,
    quantize_per_channel,
    write_int8_checkpoint,
)


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=128, tie_word_embeddings=True)
    folder = tmp_path_factory.mktemp("tiny")
    LlamaForCausalLM(cfg).save_pretrained(folder, safe_serialization=True)
    (folder / "tokenizer.json").write_text("{}")
    return folder


def test_quantize_per_channel_error_bound():
    torch.manual_seed(0)
    w = torch.randn(16, 40) * torch.linspace(0.01, 3.0, 16)[:, None]
    w[3] = 0.0
    q, scale = quantize_per_channel(w)
    assert q.dtype == torch.int8 and scale.shape == (16, 1) and scale.dtype == torch.float32
    assert int(q.abs().max()) == 127
    err = (q.float() * scale - w).abs()
    assert torch.all(err <= scale / 2 + 1e-6)
    assert torch.all(q[3] == 0) and float(scale[3]) == 1.0


def test_quantize_rejects_non_matrix():
    with pytest.raises(ValueError, match="2-D float"):
        quantize_per_channel(torch.ones(4))
    with pytest.raises(ValueError, match="2-D float"):
        quantize_per_channel(torch.ones(2, 2, dtype=torch.int32))


def test_writes_int8_linear_weights_and_keeps_the_rest(tiny_llama, tmp_path):
    out = write_int8_checkpoint(tiny_llama, tmp_path / "int8")
    src = load_file(tiny_llama / "model.safetensors")
    got = load_file(out / "model.safetensors")
    linear = [k for k in src if QUANTIZED_LINEAR.match(k)]
    assert len(linear) == 2 * 7
    for k in linear:
        assert got[k].dtype == torch.int8
        scale = got[k[: -len("weight")] + "weight_scale"]
        assert scale.shape == (src[k].shape[0], 1)
        assert torch.allclose(got[k].float() * scale, src[k].float(), atol=float(scale.max()) / 2 + 1e-6)
    for k in src:
        if not QUANTIZED_LINEAR.match(k):
            assert torch.equal(got[k], src[k]), k  # embeddings, norms kept as they were
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["quantization_config"] == quantization_config()
    assert (out / "tokenizer.json").is_file()
    assert int8_checkpoint_ok(out, tiny_llama)


def test_cached_and_rebuilt_when_corrupt(tiny_llama, tmp_path):
    out = write_int8_checkpoint(tiny_llama, tmp_path / "int8")
    mtime = (out / "model.safetensors").stat().st_mtime_ns
    assert write_int8_checkpoint(tiny_llama, out) == out
    assert (out / "model.safetensors").stat().st_mtime_ns == mtime  # reused
    (out / "model.safetensors").write_bytes(b"truncated")
    assert not int8_checkpoint_ok(out, tiny_llama)
    write_int8_checkpoint(tiny_llama, out)
    assert int8_checkpoint_ok(out, tiny_llama)


def test_rejects_folders_that_are_not_llama_checkpoints(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a safetensors checkpoint"):
        write_int8_checkpoint(tmp_path, tmp_path / "out")
    from safetensors.torch import save_file

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "config.json").write_text("{}")
    save_file({"encoder.weight": torch.ones(2, 2)}, str(tmp_path / "src" / "model.safetensors"))
    with pytest.raises(ValueError, match="not a Llama-family"):
        write_int8_checkpoint(tmp_path / "src", tmp_path / "out")
    assert not (tmp_path / "out.partial").exists()


def test_config_is_the_scheme_vllm_serves_with_its_int8_kernel():
    # compressed-tensors parses it, and vLLM classifies it as dynamic per-token W8A8 int8
    # (CompressedTensorsW8A8Int8, served on CPU by CPUInt8ScaledMMLinearKernel).
    ct = pytest.importorskip("compressed_tensors.quantization")  # installed with vLLM
    QuantizationConfig = ct.QuantizationConfig  # noqa: N806

    parsed = QuantizationConfig.model_validate(quantization_config())
    group = parsed.config_groups["group_0"]
    vllm_ct = pytest.importorskip("vllm.model_executor.layers.quantization.compressed_tensors.compressed_tensors")
    cls = vllm_ct.CompressedTensorsConfig
    assert cls._is_dynamic_token_w8a8(group.weights, group.input_activations)
    assert not cls._is_static_tensor_w8a8(group.weights, group.input_activations)
    assert parsed.ignore == ["lm_head"]
