"""Modelled profile tables: roofline iteration models for hardware that is not present.

:func:`modelled_table` expands models x precisions x TP degrees with
:func:`~oserve.profiles.variants.catalogue` (invalid ones dropped), takes each variant's
iteration-time model from :func:`~oserve.profiles.roofline.roofline_model` and builds the table
with the same :func:`~oserve.profiles.capacity.build_table` a measured profile uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from oserve.errors import ConfigError
from oserve.profiles.capacity import build_table
from oserve.profiles.hardware import get_hardware
from oserve.profiles.roofline import efficiency_for, estimate_start_time_s, roofline_model
from oserve.profiles.table import ProfileTable
from oserve.profiles.variants import catalogue, get_model
from oserve.types import DEFAULT_SCHEME, SLO, ClassScheme

__all__ = ["modelled_table", "GPU_SLO"]

#: SLO used for the committed GPU tables: interactive chat targets (TTFT 1 s, TPOT 100 ms,
#: i.e. >= 10 tokens/s per request, faster than reading speed).
GPU_SLO = SLO(ttft_s=1.0, tpot_s=0.1)


def modelled_table(
    models: Sequence[str],
    device_type: str,
    precisions: Sequence[str] = ("fp16", "int8", "int4"),
    tps: Sequence[int] = (1, 2, 4, 8),
    slo: SLO = GPU_SLO,
    scheme: ClassScheme = DEFAULT_SCHEME,
    created: str | None = None,
    **variant_kwargs: Any,
) -> ProfileTable:
    """Roofline-modelled lookup table of every valid variant.

    Args:
        models: built-in architecture names, e.g. ``["llama-3-8b", "llama-2-70b"]``.
        device_type: e.g. ``"a100-80gb"``.
        precisions / tps: the grid to expand.
        slo / scheme: capacity targets and request classes.
        created: ISO date to stamp (default today).
        **variant_kwargs: forwarded to every Variant (``max_num_seqs``, ...); ``max_model_len``
            defaults to each model's context length.

    Raises:
        ConfigError: unknown model or device, or no valid variant at all.
    """
    hw = get_hardware(device_type)
    variants = []
    for name in models:
        arch = get_model(name)
        kw = {"max_model_len": arch.max_position_embeddings, **variant_kwargs}
        variants += catalogue(arch, device_type, tuple(precisions), tuple(tps), **kw)
    if not variants:
        raise ConfigError(f"no valid variant of {list(models)} on {device_type}", field="models")
    eff = efficiency_for(device_type)
    return build_table(
        variants,
        {v.name: roofline_model(v, eff) for v in variants},
        source="modelled",
        slo=slo,
        scheme=scheme,
        start_times_s={v.name: estimate_start_time_s(v) for v in variants},
        hardware={"device_type": device_type, "datasheet": hw.citation},
        software={"model": "oserve.profiles.roofline", "efficiency": eff.model_dump_json(),
                  "engine": "vLLM (calibrated on LLM-Inference-Bench vLLM rows, mid-2024)"},
        created=created,
    )
