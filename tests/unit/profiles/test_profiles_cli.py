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
    assert capsys.readouterr().err.startswith("oserve: error: cannot read profile table")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: x\narch: smollm2-135m\nvariants: [{precision: int4}]\n")
    assert main(["profile", str(bad), "-o", str(tmp_path / "o.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("oserve: error: ") and "variants[0].precision" in err[0]


def test_profile_prints_table_on_stdout_and_notes_on_stderr(tmp_path, capsys, monkeypatch) -> None:
    """A fake sweep (canned table and report): the CLI's output split is what is tested here."""
    from oserve.profiles.profiler import Profiler
    from oserve.profiles.sweep import SweepReport, UnmetClass
    from oserve.testing.tables import synthetic_table

    table = synthetic_table({"v1": {"a": 1.0, "b": 0.0}}, {"v1": 1}, class_names=["a", "b"])
    report = SweepReport(measured=["v1"], skipped={"v4": "needs 4 CPU cores, this machine offers 2"},
                         failed={"v2": "EngineStartError: boom"}, unmet=[UnmetClass("b", 0.5, "v1", 0.02, "v1")])

    async def fake_sweep(self, out):
        table.save(out)
        return table, report

    monkeypatch.setattr(Profiler, "sweep", fake_sweep)
    cfg = tmp_path / "p.yaml"
    cfg.write_text("model: x\narch: smollm2-135m\nbackend: {kind: fake}\nvariants: [{precision: fp32}]\n")
    out = tmp_path / "t.json"
    assert main(["profile", str(cfg), "-o", str(out), "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "v1" in captured.out and "oserve profile" not in captured.out
    assert "skipped v4: needs 4 CPU cores" in captured.err and "FAILED v2: EngineStartError: boom" in captured.err
    assert "no candidate meets the SLO for class b: best TTFT 0.5 s (v1)" in captured.err
    assert f"wrote {out.resolve()}" in captured.err
