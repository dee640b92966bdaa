"""Unit tests of the serve config and the CLI's error handling (no engines)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from oserve.cli import main
from oserve.compose import resolve_model_path
from oserve.config import load_config
from oserve.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "cpu-smollm2.yaml"


def _write(tmp_path: Path, raw: dict) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def _example() -> dict:
    return yaml.safe_load(EXAMPLE.read_text())


def test_example_config_loads() -> None:
    cfg = load_config(EXAMPLE)
    assert len(cfg.deployment) == 2 and cfg.orchestrator is not None
    assert cfg.classes.to_scheme().names == ["short-in/short-out", "short-in/long-out", "long-in/short-out",
                                              "long-in/long-out"]


def test_two_replicas_on_one_core_is_refused(tmp_path: Path) -> None:
    raw = _example()
    raw["deployment"][1]["device_ids"] = [0]
    with pytest.raises(ConfigError, match="already used by deployment"):
        load_config(_write(tmp_path, raw))


@pytest.mark.parametrize("field,value,match", [
    ("max_num_seqs", 0, "max_num_seqs"),
    ("max_model_len", 10, "max_model_len"),
    ("dtype", "float8", "dtype"),
])
def test_variant_values_out_of_range_name_the_field(tmp_path: Path, field: str, value: object, match: str) -> None:
    raw = _example()
    next(iter(raw["variants"].values()))[field] = value
    with pytest.raises(ConfigError, match=match) as info:
        load_config(_write(tmp_path, raw))
    assert info.value.field is not None and field in info.value.field


def test_unknown_key_is_refused(tmp_path: Path) -> None:
    raw = _example()
    raw["server"]["prot"] = 1
    with pytest.raises(ConfigError, match="server.prot"):
        load_config(_write(tmp_path, raw))


def test_missing_model_folder_is_a_config_error(tmp_path: Path) -> None:
    raw = _example()
    raw["model"]["path"] = str(tmp_path / "nowhere")
    cfg = load_config(_write(tmp_path, raw))
    with pytest.raises(ConfigError) as info:
        resolve_model_path(cfg)
    assert info.value.field == "model.path"


def test_cli_prints_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "t.csv"
    bad.write_text("TIMESTAMP,ContextTokens\n2023-11-16 18:17:03.9799600,10\n")
    assert main(["trace-stats", "--format", "azure", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "GeneratedTokens" in err and "Traceback" not in err
