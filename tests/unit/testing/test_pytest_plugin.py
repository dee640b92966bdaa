"""The pytest plugin: backend selection by option and marker, and its config helpers (no engines)."""

from __future__ import annotations

import os
from importlib.metadata import entry_points
from pathlib import Path

import pytest

import oserve
from oserve.errors import ConfigError
from oserve.testing import poisson_trace, serve_config

pytest_plugins = ["pytester"]

_TESTS = """
import pytest

def test_default_is_fake(oserve_config):
    assert oserve_config.backend.kind == "{default}"

@pytest.mark.oserve_backend("vllm")
def test_marker_asks_for_real_engines(oserve_config):
    assert oserve_config.backend.kind == "vllm" and len(oserve_config.deployment) == 1
"""


@pytest.mark.parametrize("option,default", [([], "fake"), (["--oserve-backend", "vllm"], "vllm")])
def test_backend_is_chosen_by_option_and_marker(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                                                option: list[str], default: str) -> None:
    src = str(Path(oserve.__file__).resolve().parents[1])  # the subprocess runs elsewhere: import this oserve
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH", "")) if p))
    pytester.makepyfile(_TESTS.replace("{default}", default))
    installed = bool(entry_points(group="pytest11", name="oserve"))  # else load it by module name
    load = [] if installed else ["-p", "oserve.testing.pytest_plugin"]
    result = pytester.runpytest_subprocess(*load, "-p", "no:cacheprovider", *option)
    result.assert_outcomes(passed=2)


def test_serve_config_refuses_bad_arguments() -> None:
    with pytest.raises(ConfigError) as info:
        serve_config("tgi")
    assert info.value.field == "backend"
    with pytest.raises(ConfigError) as info:
        serve_config(replicas=0)
    assert info.value.field == "replicas"
    assert serve_config(replicas=3).cluster_spec.total_devices == 3


def test_poisson_trace_is_seeded_and_sorted() -> None:
    a, b = poisson_trace(5.0, 100.0, seed=2), poisson_trace(5.0, 100.0, seed=2)
    assert len(a) == len(b) and (a.arrival_s == b.arrival_s).all()
    assert (a.arrival_s[1:] >= a.arrival_s[:-1]).all() and 300 < len(a) < 700
    with pytest.raises(ConfigError):
        poisson_trace(0.0, 10.0)
