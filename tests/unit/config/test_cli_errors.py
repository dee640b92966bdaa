"""Command-line errors: one line, one prefix, exit code 2, file and line, closest match first;
the port is checked before any engine starts."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from oserve.cli import main
from oserve.cli.errors import EXIT_CODE, PREFIX, format_cli_error
from oserve.cli.preflight import ensure_port_free
from oserve.config import ServeConfig, load_config
from oserve.errors import ConfigError
from oserve.yaml_config import closest_first, did_you_mean, load_yaml_model

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "examples" / "cpu-smollm2.yaml"


def _variant(tmp_path: Path, old: str, new: str) -> Path:
    text = EXAMPLE.read_text()
    assert old in text
    path = tmp_path / "cfg.yaml"
    path.write_text(text.replace(old, new, 1).replace("table: profiles/", f"table: {ROOT}/examples/profiles/"))
    return path


def _line_of(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


def _one_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(PREFIX)
    return err[0]


def test_closest_first_and_suggestion():
    assert closest_first("mlip", ["static", "greedy", "milp", "flow"])[0] == "milp"
    assert did_you_mean("planer", ["forecaster", "planner", "table"]) == "planner"
    assert did_you_mean("zzz", ["planner"]) is None


def test_misspelt_key_names_file_line_and_closest_key(tmp_path, capsys):
    path = _variant(tmp_path, "  drain_timeout_s: 30", "  drain_timout_s: 30")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.field == "orchestrator.drain_timout_s"
    assert main(["serve", str(path)]) == EXIT_CODE
    line = _one_error(capsys)
    assert f"{path}:{_line_of(path, 'drain_timout_s')}: orchestrator.drain_timout_s: unknown key" in line
    assert "did you mean 'drain_timeout_s'?" in line


def test_misspelt_nested_key_in_a_list(tmp_path):
    path = _variant(tmp_path, "device_type: cpu", "device_typ: cpu")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "did you mean 'device_type'?" in str(err.value) and f"{path}:" in str(err.value)


def test_malformed_yaml_is_one_line_with_file_line_column(tmp_path, capsys):
    path = _variant(tmp_path, "  port: 8000", "  port: 8000: x")
    assert main(["serve", str(path)]) == EXIT_CODE
    line = _one_error(capsys)
    assert f"{path}:{_line_of(path, 'port: 8000: x')}:" in line and "malformed YAML" in line
    assert "<unicode string>" not in line


def test_out_of_range_value_names_line_and_bound(tmp_path):
    path = _variant(tmp_path, "  port: 8000", "  port: 99999")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert f"{path}:{_line_of(path, 'port: 99999')}: server.port:" in str(err.value)
    assert "65535" in str(err.value)


@pytest.mark.parametrize(("old", "new", "expect"), [
    ("kind: milp", "kind: mlip", "unknown planner 'mlip' (field planner.kind); did you mean 'milp'? allowed: milp"),
    ("{kind: default}", "{kind: ewmaa}", "unknown forecaster 'ewmaa'; did you mean 'ewma'? allowed: ewma"),
])
def test_unknown_component_lists_allowed_closest_first(tmp_path, capsys, monkeypatch, old, new, expect):
    path = _variant(tmp_path, old, new)
    from oserve.backends.vllm import VLLMBackend

    async def no_engines(*a, **k):  # the names are checked before any engine would start
        raise AssertionError("an engine start was attempted")

    monkeypatch.setattr(VLLMBackend, "start_replica", no_engines)
    assert main(["serve", str(path), "--port", "0"]) == EXIT_CODE
    assert expect in _one_error(capsys)


def test_status_on_a_dead_url_uses_the_same_prefix_and_exit_code(capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["status", f"http://127.0.0.1:{port}", "--timeout-s", "2"]) == EXIT_CODE
    assert "cannot reach" in _one_error(capsys)


def test_busy_port_is_refused_before_any_engine_starts(tmp_path, capsys, monkeypatch):
    import oserve.compose.stack

    monkeypatch.setattr(oserve.compose.stack, "start_stack", lambda *a, **k: pytest.fail("engines started"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(ConfigError) as err:
            ensure_port_free("127.0.0.1", port)
        assert err.value.field == "server.port"
        assert main(["serve", str(EXAMPLE), "--port", str(port)]) == EXIT_CODE
        assert f"port {port} on 127.0.0.1 is already in use" in _one_error(capsys)
    ensure_port_free("127.0.0.1", 0)


@pytest.mark.parametrize("port", [0, 8000])
def test_a_host_that_is_not_local_fails_before_any_engine_starts(port):
    with pytest.raises(ConfigError) as err:  # 192.0.2.1: TEST-NET-1, never an address of this machine
        ensure_port_free("192.0.2.1", port)
    assert err.value.field == "server.host"


def test_missing_file_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"cannot read config .*nope.yaml"):
        load_yaml_model(tmp_path / "nope.yaml", ServeConfig)


def test_format_non_oserve_errors():
    assert format_cli_error(FileNotFoundError(2, "No such file", "/x/y")) == PREFIX + "no such file: /x/y"
    assert format_cli_error(ValueError("bad\nvalue")) == PREFIX + "ValueError: bad value"


def test_examples_still_load():
    for path in ROOT.glob("examples/*.yaml"):
        if "profile" in path.name or "sim" in path.name or "cluster" in path.name:
            continue
        load_config(path)


@pytest.mark.parametrize("argv", [
    ["plan", str(ROOT / "examples" / "cluster-cpu.yaml"), "--table", str(ROOT / "examples/profiles/cpu-smollm2.json"),
     "--demand", "{not json"],
    ["trace-stats", "/nonexistent/trace.csv"],
    ["simulate", "/nonexistent/sim.yaml", "--out", "/tmp/oserve-test-sim-out"],
    ["forecast-backtest", "/nonexistent/trace.csv", "--horizons", "x"],
    ["profile", "--show", "/nonexistent/profile.json"],
    ["serve", "/nonexistent/serve.yaml"],
])
def test_every_command_reports_errors_the_same_way(argv, capsys):
    assert main(argv) == EXIT_CODE
    _one_error(capsys)


@pytest.mark.parametrize(("exc", "expected"), [
    # the message ends in a value: "; " sets the allowed range off from it (was "got 5 allowed: ...")
    (ConfigError("--window must be > 0 seconds, got 5", field="window", allowed="(0, 10] s"),
     "--window must be > 0 seconds, got 5; allowed: (0, 10] s"),
    (ConfigError("bad planner weights", field="planner.weights", allowed="finite numbers >= 0"),
     "bad planner weights (field planner.weights); allowed: finite numbers >= 0"),
    # after a question the allowed names follow with a space, as before
    (ConfigError("unknown planner 'mlip'", field="planner.kind", allowed="milp, greedy"),
     "unknown planner 'mlip' (field planner.kind); did you mean 'milp'? allowed: milp, greedy"),
])
def test_allowed_values_are_set_off_from_the_message(exc: ConfigError, expected: str) -> None:
    assert format_cli_error(exc) == PREFIX + expected


def test_an_unknown_key_with_no_close_name_lists_the_allowed_keys_after_a_separator(tmp_path: Path) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text("server:\n  port: 8000\nzzzzqqq: 1\n")
    with pytest.raises(ConfigError) as err:
        load_yaml_model(path, ServeConfig)
    assert f"{path}:3: zzzzqqq: unknown key; allowed: " in str(err.value)
