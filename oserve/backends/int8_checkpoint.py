"""Write an INT8 W8A8 checkpoint in the compressed-tensors format from a full-precision one.

The scheme is the one vLLM calls "dynamic per-token W8A8" (``CompressedTensorsW8A8Int8``), served on
CPU by vLLM's int8 kernel (``CPUInt8ScaledMMLinearKernel``, oneDNN or the AMX SGL kernel):

* every linear layer inside the decoder layers (``q/k/v/o_proj``, ``gate/up/down_proj``) stores
  ``weight`` as int8 with one symmetric scale per output channel, ``weight_scale`` (fp32, shape
  ``(out_features, 1)``): ``scale = max|w_row| / 127``, ``q = clamp(round(w / scale), -127, 127)``;
* activations are quantized by the engine at run time, per token, symmetric, 8 bit (dynamic: no
  calibration data is needed);
* embeddings, norms and ``lm_head`` (tied to the embeddings in SmolLM2) stay in full precision.

The format follows the ``quantization_config`` that llm-compressor writes for its ``W8A8`` preset
(``format: int-quantized``, ``config_groups.group_0`` with ``strategy: channel`` weights and
``strategy: token, dynamic: true`` input activations, ``ignore: [lm_head]``).

Nothing is downloaded. A marker file written last makes a half-written cache detectable.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

from oserve.backends.cache_lock import build_lock

__all__ = [
    "QUANTIZED_LINEAR",
    "quantization_config",
    "quantize_per_channel",
    "int8_checkpoint_ok",
    "write_int8_checkpoint",
]

log = logging.getLogger(__name__)

#: names of the weights quantized to int8 (Llama-family decoder layers).
QUANTIZED_LINEAR = re.compile(
    r"^model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)\.weight$")
_MARKER = "oserve-int8.json"
_MARKER_VERSION = 1


def quantization_config() -> dict:
    """The compressed-tensors ``quantization_config`` of a dynamic per-token INT8 W8A8 checkpoint."""
    return {
        "quant_method": "compressed-tensors",
        "format": "int-quantized",
        "quantization_status": "compressed",
        "config_groups": {
            "group_0": {
                "targets": ["Linear"],
                "weights": {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "channel",
                            "dynamic": False, "group_size": None, "observer": "minmax"},
                "input_activations": {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "token",
                                      "dynamic": True, "group_size": None, "observer": None},
                "output_activations": None,
            }
        },
        "ignore": ["lm_head"],
        "kv_cache_scheme": None,
        "global_compression_ratio": None,
    }


def quantize_per_channel(weight):  # noqa: ANN001, ANN201 - torch is imported lazily
    """Symmetric per-output-channel int8 quantization of one weight matrix.

    Args:
        weight: float tensor of shape ``(out_features, in_features)``.

    Returns:
        ``(q, scale)``: int8 tensor ``(out_features, in_features)`` and fp32 scales
        ``(out_features, 1)`` with ``weight ~= q * scale``; the error of each element is at most
        ``scale / 2`` of its row. An all-zero row gets scale 1 (and zeros).

    Raises:
        ValueError: ``weight`` is not 2-D or not a floating-point tensor.
    """
    import torch

    if weight.ndim != 2 or not torch.is_floating_point(weight):
        raise ValueError(f"weight must be a 2-D float tensor, got shape {tuple(weight.shape)} {weight.dtype}")
    w = weight.to(torch.float32)
    absmax = w.abs().amax(dim=1, keepdim=True)
    scale = torch.where(absmax > 0, absmax / 127.0, torch.ones_like(absmax))
    q = torch.round(w / scale).clamp_(-127, 127).to(torch.int8)
    return q, scale


def int8_checkpoint_ok(folder: Path, source: Path) -> bool:
    """True when ``folder`` holds a complete int8 checkpoint written from ``source`` by this version."""
    try:
        meta = json.loads((folder / _MARKER).read_text())
    except (OSError, json.JSONDecodeError):
        return False
    if meta.get("version") != _MARKER_VERSION or meta.get("source") != str(source):
        return False
    if meta.get("source_sizes") != _sizes(source):
        return False
    files = meta.get("files", {})
    return bool(files) and all((folder / n).is_file() and (folder / n).stat().st_size == s for n, s in files.items())


def _sizes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in sorted(folder.glob("*.safetensors"))}


def write_int8_checkpoint(source: Path, target: Path) -> Path:
    """Write (once) the INT8 W8A8 checkpoint of the full-precision checkpoint ``source`` into ``target``.

    Args:
        source: Hugging Face checkpoint folder (config.json, ``*.safetensors``, tokenizer files) of a
            Llama-family model, fp32 preferred (the scales are computed from its weights).
        target: folder to write; reused when its marker says it is complete and from ``source``.

    Returns:
        ``target``.

    Raises:
        FileNotFoundError: ``source`` has no config.json or no safetensors file.
        ValueError: no weight matched :data:`QUANTIZED_LINEAR` (not a Llama-family checkpoint).

    Side effects:
        Writes about 1/4 of the fp32 linear weights plus the full-precision embeddings (SmolLM2-135M:
        ~0.25 GB from fp32); an incomplete ``target`` is removed and rebuilt (logged at WARNING).
    """
    source, target = Path(source), Path(target)
    shards = sorted(source.glob("*.safetensors"))
    if not (source / "config.json").is_file() or not shards:
        raise FileNotFoundError(f"{source} is not a safetensors checkpoint folder (config.json + *.safetensors)")
    if int8_checkpoint_ok(target, source):
        return target
    with build_lock(target):
        if int8_checkpoint_ok(target, source):  # another process wrote it while this one waited
            return target
        return _write_int8(source, target, shards)


def _write_int8(source: Path, target: Path, shards: list[Path]) -> Path:
    import torch
    from safetensors.torch import load_file, save_file

    if target.exists():
        log.warning("int8 checkpoint %s is incomplete or stale; rebuilding it from %s", target, source)
        shutil.rmtree(target)
    else:
        log.info("writing the INT8 W8A8 checkpoint of %s into %s (once)", source, target)
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)

    out: dict[str, torch.Tensor] = {}
    quantized = 0
    for shard in shards:
        for name, tensor in load_file(shard).items():
            if QUANTIZED_LINEAR.match(name):
                q, scale = quantize_per_channel(tensor)
                out[name] = q.contiguous()
                out[name[: -len("weight")] + "weight_scale"] = scale.contiguous()
                quantized += 1
            else:
                out[name] = tensor.contiguous()
    if not quantized:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ValueError(f"{source}: no linear weight matched {QUANTIZED_LINEAR.pattern}; not a Llama-family model")
    save_file(out, str(tmp / "model.safetensors"), metadata={"format": "pt"})

    config = json.loads((source / "config.json").read_text())
    config["quantization_config"] = quantization_config()
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    for f in source.iterdir():
        skip = f.suffix == ".safetensors" or f.name.endswith(".index.json") or f.name == "config.json"
        if f.is_file() and not skip and not f.name.startswith("oserve-"):
            shutil.copy2(f, tmp / f.name)
    files = {p.name: p.stat().st_size for p in tmp.iterdir() if p.is_file()}
    (tmp / _MARKER).write_text(json.dumps({"version": _MARKER_VERSION, "source": str(source),
                                           "source_sizes": _sizes(source), "quantized_weights": quantized,
                                           "files": files}))
    tmp.rename(target)
    return target
