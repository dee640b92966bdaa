"""``oserve profile`` CLI: --modelled, --show, --plot and config errors."""

from __future__ import annotations

from oserve.cli import main
from oserve.profiles.table import ProfileTable


def test_modelled_show_and_plot(tmp_path, capsys) -> None:
    out = tmp_path / "m.json"
    rc = main(["profile", "--modelled", "a100-80gb", "--arch", "llama-3-8b", "--precisions", "fp16,int4",
               "--tp", "1,2", "-o", str(out)])
    assert rc == 0
    table = ProfileTable.load(out)
    assert set(table.variants) == {"llama-3-8b-fp16-tp1", "llama-3-8b-fp16-tp2", "llama-3-8b-int4-tp1",
                                   "llama-3-8b-int4-tp2"}
    assert table.slo.ttft_s == 1.0 and table.slo.tpot_s == 0.1
    png = tmp_path / "cap.png"
    assert main(["profile", "--show", str(out), "--plot", str(png)]) == 0
    printed = capsys.readouterr().out
    assert "llama-3-8b-int4-tp2" in printed
    assert png.stat().st_size > 1000


def test_errors_exit_2(tmp_path, capsys) -> None:
    assert main(["profile", "--show", str(tmp_path / "missing.json")]) == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: x\narch: smollm2-135m\nvariants: [{precision: int4}]\n")
    assert main(["profile", str(bad), "-o", str(tmp_path / "o.json")]) == 2
    assert "variants[0].precision" in capsys.readouterr().out
