"""Trace loaders on the real Azure 2023 slices and on malformed files."""

from __future__ import annotations

import gzip
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from oserve.errors import TraceError
from oserve.workload.loaders import (
    TraceOrderWarning,
    load_azure,
    load_burstgpt,
    load_generic,
    load_mooncake,
    load_trace,
    parse_timestamp,
)

DATA = Path(__file__).resolve().parents[3] / "data" / "traces" / "azure_llm_2023"
CODE = DATA / "AzureLLMInferenceTrace_code.csv"
CONV = DATA / "AzureLLMInferenceTrace_conv.csv"


@pytest.fixture(scope="module")
def conv():
    return load_trace(CONV)


@pytest.fixture(scope="module")
def code():
    return load_trace(CODE)


def test_azure_conv_matches_readme(conv):
    assert len(conv) == 19_366
    assert conv.meta["format"] == "azure"
    assert conv.arrival_s[0] == 0.0 and np.all(np.diff(conv.arrival_s) >= 0)
    assert conv.duration_s == pytest.approx(58.4 * 60, abs=60)  # README: 18:15:46.68 -> 19:14:08.40
    assert conv.duration_s == pytest.approx(3501.72, abs=0.01)
    assert np.median(conv.input_tokens) == 1020
    assert np.median(conv.output_tokens) == 129
    assert int(conv.input_tokens.max()) == 14_050
    assert set(conv.source) == {"conv"}
    assert not np.any(conv.output_tokens == 0)  # README: no row has GeneratedTokens == 0


def test_azure_code_matches_readme(code):
    assert len(code) == 8_819
    assert code.duration_s == pytest.approx(3435.95, abs=0.01)  # 18:17:03.98 -> 19:14:19.93
    assert np.median(code.output_tokens) == 13
    assert code.input_tokens.dtype == np.int64


def test_azure_first_timestamp_keeps_seven_digits(code):
    # 2023-11-16 18:17:03.9799600 read as UTC
    assert code.meta["t0_s"] == pytest.approx(1700158623.97996, abs=1e-6)
    assert code.meta["clock"] == "posix"


def test_parse_timestamp_fraction_digits():
    base = parse_timestamp("2023-11-16 18:17:03")
    assert parse_timestamp("2023-11-16 18:17:03.9799600") - base == pytest.approx(0.97996, abs=1e-7)
    assert parse_timestamp("2023-11-16T18:17:03.5Z") - base == pytest.approx(0.5)
    assert parse_timestamp("2023-11-16 19:17:03+01:00") == pytest.approx(base)
    with pytest.raises(ValueError):
        parse_timestamp("yesterday")


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


AZ_HEAD = "TIMESTAMP,ContextTokens,GeneratedTokens\n"


@pytest.mark.parametrize(
    ("body", "row", "column"),
    [
        ("2023-11-16 18:00:00.1234567,10,5\n2023-11-16 18:00:01.0,-3,5\n", 2, "ContextTokens"),
        ("2023-11-16 18:00:00.1,ten,5\n", 1, "ContextTokens"),
        ("2023-11-16 18:00:00.1,10,5.5\n", 1, "GeneratedTokens"),
        ("2023-11-16 18:00:00.1,10,5\nnot-a-time,10,5\n", 2, "TIMESTAMP"),
        ("2023-11-16 18:00:00.1,10\n", 1, "GeneratedTokens"),
    ],
)
def test_azure_bad_rows_name_file_row_column(tmp_path, body, row, column):
    p = _write(tmp_path, "bad.csv", AZ_HEAD + body)
    with pytest.raises(TraceError) as ei:
        load_azure(p)
    err = ei.value
    assert (err.path, err.row, err.column) == (str(p), row, column)
    assert str(p) in str(err) and f"row {row}" in str(err)


def test_missing_column(tmp_path):
    p = _write(tmp_path, "t.csv", "TIMESTAMP,ContextTokens\n2023-11-16 18:00:00,10\n")
    with pytest.raises(TraceError) as ei:
        load_azure(p)
    assert ei.value.column == "GeneratedTokens"


@pytest.mark.parametrize("text", ["", AZ_HEAD, AZ_HEAD + "\n\n"])
def test_empty_trace_is_an_error(tmp_path, text):
    p = _write(tmp_path, "e.csv", text)
    with pytest.raises(TraceError, match="empty|no request"):
        load_azure(p)


def test_unsorted_rows_sorted_with_warning(tmp_path):
    p = _write(tmp_path, "u.csv", AZ_HEAD + "2023-11-16 18:00:02,30,3\n2023-11-16 18:00:00,10,1\n"
               "2023-11-16 18:00:01,20,2\n")
    with pytest.warns(TraceOrderWarning, match="out of arrival-time order"):
        tr = load_azure(p)
    assert tr.arrival_s.tolist() == [0.0, 1.0, 2.0]
    assert tr.input_tokens.tolist() == [10, 20, 30]
    assert tr.output_tokens.tolist() == [1, 2, 3]


def test_sorted_file_gives_no_warning(tmp_path):
    p = _write(tmp_path, "s.csv", AZ_HEAD + "2023-11-16 18:00:00,10,1\n2023-11-16 18:00:01,20,2\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_azure(p)


def test_burstgpt_failures_flagged(tmp_path):
    p = _write(tmp_path, "burst.csv",
               "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
               "5,ChatGPT,472,18,490,Conversation log\n"
               "45,GPT-4,1087,0,1087,Conversation log\n"
               "118,ChatGPT,417,294,711,API log\n")
    tr = load_trace(p)
    assert tr.meta["format"] == "burstgpt"
    assert tr.arrival_s.tolist() == [0.0, 40.0, 113.0]
    assert tr.failed.tolist() == [False, True, False]
    assert tr.source.tolist() == ["ChatGPT", "GPT-4", "ChatGPT"]
    assert tr.meta["log_type"][2] == "API log"


def test_burstgpt_bad_timestamp(tmp_path):
    p = _write(tmp_path, "burst.csv", "Timestamp,Model,Request tokens,Response tokens\n5,M,1,1\nx,M,1,1\n")
    with pytest.raises(TraceError) as ei:
        load_burstgpt(p)
    assert (ei.value.row, ei.value.column) == (2, "Timestamp")


def test_mooncake_jsonl(tmp_path):
    rows = [{"timestamp": 0, "input_length": 6955, "output_length": 52, "hash_ids": [0, 1]},
            {"timestamp": 27482, "input_length": 6472, "output_length": 26, "hash_ids": [0, 2]}]
    p = _write(tmp_path, "mc.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    tr = load_trace(p)
    assert tr.meta["format"] == "mooncake"
    assert tr.arrival_s.tolist() == pytest.approx([0.0, 27.482])
    assert tr.meta["hash_ids"] == [[0, 1], [0, 2]]
    bad = _write(tmp_path, "bad.jsonl", json.dumps(rows[0]) + "\n{\"timestamp\": 1, \"input_length\": 3}\n")
    with pytest.raises(TraceError) as ei:
        load_mooncake(bad)
    assert (ei.value.row, ei.value.column) == (2, "output_length")


def test_generic_mapping_csv_gz_and_iso(tmp_path):
    p = tmp_path / "g.csv.gz"
    with gzip.open(p, "wt") as fh:
        fh.write("when,prompt,completion,svc\n2024-05-10 00:00:00.25,100,10,a\n2024-05-10 00:00:01.75,200,20,b\n")
    tr = load_trace(p, mapping={"timestamp": "when", "input_tokens": "prompt", "output_tokens": "completion",
                                "source": "svc", "timestamp_unit": "iso"})
    assert tr.arrival_s.tolist() == pytest.approx([0.0, 1.5])
    assert tr.source.tolist() == ["a", "b"]
    with pytest.raises(TraceError, match="mapping lacks"):
        load_generic(p, {"timestamp": "when"})


def test_generic_ms_jsonl(tmp_path):
    p = _write(tmp_path, "g.jsonl", '{"t": 1000, "i": 5, "o": 6}\n{"t": 1500, "i": 7, "o": 8}\n')
    tr = load_generic(p, {"timestamp": "t", "input_tokens": "i", "output_tokens": "o", "timestamp_unit": "ms"})
    assert tr.arrival_s.tolist() == pytest.approx([0.0, 0.5])


def test_undetectable_format_and_missing_file(tmp_path):
    p = _write(tmp_path, "x.csv", "a,b,c\n1,2,3\n")
    with pytest.raises(TraceError, match="cannot detect"):
        load_trace(p)
    with pytest.raises(TraceError, match="not found"):
        load_trace(tmp_path / "nope.csv")
    with pytest.raises(TraceError, match="unknown trace format"):
        load_trace(p, fmt="parquet")


def test_import_is_light():
    import subprocess
    import sys

    code = ("import sys, oserve.workload, oserve.workload.loaders, oserve.workload.stats; "
            "heavy = [m for m in ('aiohttp', 'httpx', 'transformers', 'torch', 'pandas') if m in sys.modules]; "
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_zero_output_rows_flagged_failed_in_every_format(tmp_path):
    az = _write(tmp_path, "az.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n"
                "2023-11-16 18:15:46.6805900,374,44\n2023-11-16 18:15:50.9951690,396,0\n")
    assert load_trace(az).failed.tolist() == [False, True]
    mc = _write(tmp_path, "mc.jsonl", '{"timestamp": 0, "input_length": 5, "output_length": 0, "hash_ids": []}\n'
                '{"timestamp": 10, "input_length": 6, "output_length": 3, "hash_ids": []}\n')
    assert load_trace(mc).failed.tolist() == [True, False]
    ok = _write(tmp_path, "ok.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.68,374,44\n")
    assert load_trace(ok).failed is None  # nothing failed: no flags
