"""Trace loaders: real request traces from files into oserve's normalised :class:`Trace`.

Supported formats (``fmt`` of :func:`load_trace`):

- ``"azure"``: Azure LLM inference traces (2023 code / conversation CSVs, the 2024 week-long files
  have the same columns): ``TIMESTAMP`` (``YYYY-MM-DD HH:MM:SS.fffffff``, 7 fractional digits),
  ``ContextTokens``, ``GeneratedTokens``. Rows with zero generated tokens are flagged in
  ``Trace.failed``.
- ``"burstgpt"``: BurstGPT CSV: ``Timestamp`` (seconds), ``Model``, ``Request tokens``,
  ``Response tokens``, ``Total tokens``, ``Log Type``. Rows with zero response tokens are failures:
  kept, flagged in ``Trace.failed``. The ``Model`` column becomes the source tag.
- ``"mooncake"``: Mooncake JSONL: ``timestamp`` (milliseconds), ``input_length``,
  ``output_length``, ``hash_ids`` (kept in ``meta["hash_ids"]``). Rows with zero output tokens are
  flagged in ``Trace.failed``.

A row that records no generated token describes a request that failed (or was cut before its
first token), not a workload to reproduce: every loader flags it in ``Trace.failed`` (BurstGPT's
README defines its zero-response rows as failures; vLLM's BurstGPT loader drops them), and
:func:`oserve.workload.replay.replay` skips flagged rows unless asked to include them. Formats
without such rows leave ``Trace.failed`` None.
- ``"generic"``: any CSV or JSONL with a column mapping (see :func:`load_generic`).

Every loader returns arrival times in seconds from the first request, sorted; rows out of order
are sorted with a :class:`TraceOrderWarning`. Malformed rows raise :class:`TraceError` naming the
file, the 1-based data row and the column. A trace with no request is an error. Files ending in
``.gz`` are read through gzip.
"""

from __future__ import annotations

import csv
import datetime as dt
import functools
import gzip
import io
import json
import logging
import math
import re
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from oserve.errors import TraceError
from oserve.workload.trace import Trace

__all__ = [
    "TraceOrderWarning",
    "load_azure",
    "load_burstgpt",
    "load_mooncake",
    "load_generic",
    "load_trace",
    "parse_timestamp",
    "FORMATS",
]

log = logging.getLogger(__name__)

FORMATS = ("auto", "azure", "burstgpt", "mooncake", "generic")
TIMESTAMP_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9, "iso": None}


class TraceOrderWarning(UserWarning):
    """A trace's rows were not sorted by arrival time; the loader sorted them."""


_ISO_RE = re.compile(r"^\s*(\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(?::\d{2})?)(?:\.(\d+))?\s*(Z|[+-]\d{2}:?\d{2})?\s*$")


def parse_timestamp(text: str) -> float:
    """Parse an ISO-like date-time into POSIX seconds.

    Accepts any number of fractional digits (Azure writes 7, more than ``datetime`` takes): the
    fraction is parsed as a decimal separately, so no digit is lost. A time without zone is read
    as UTC; ``Z`` and ``+HH:MM`` offsets are honoured.

    Raises:
        ValueError: the text is not a date-time.
    """
    m = _ISO_RE.match(text)
    if m is None:
        raise ValueError(f"not a date-time: {text!r}")
    base, frac, tz = m.groups()
    t = dt.datetime.fromisoformat(base.replace(" ", "T"))
    if tz in (None, "Z"):
        t = t.replace(tzinfo=dt.UTC)
    else:
        t = t.replace(tzinfo=dt.datetime.strptime(tz.replace(":", ""), "%z").tzinfo)
    return t.timestamp() + (float("0." + frac) if frac else 0.0)


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")  # noqa: SIM115


def _base_suffix(path: Path) -> str:
    return Path(path.stem).suffix.lower() if path.suffix == ".gz" else path.suffix.lower()


def _int_tokens(value: Any, path: str, row: int, column: str) -> int:
    """Parse a non-negative token count (an int, or a float/str holding an integral number)."""
    if isinstance(value, bool):
        raise TraceError(f"token count must be a number, got {value!r}", path=path, row=row, column=column)
    if isinstance(value, int):
        n = value
    else:
        text = str(value).strip() if value is not None else ""
        try:
            n = int(text)
        except ValueError:
            try:
                f = float(text)
            except ValueError:
                raise TraceError(f"token count is not a number: {value!r}", path=path, row=row,
                                 column=column) from None
            if not math.isfinite(f) or f != int(f):
                raise TraceError(f"token count must be a whole number, got {value!r}", path=path, row=row,
                                 column=column) from None
            n = int(f)
    if n < 0:
        raise TraceError(f"token count must be >= 0, got {n}", path=path, row=row, column=column)
    return n


def _number(value: Any, path: str, row: int, column: str) -> float:
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise TraceError(f"timestamp is not a number: {value!r}", path=path, row=row, column=column) from None
    if not math.isfinite(f):
        raise TraceError(f"timestamp is not finite: {value!r}", path=path, row=row, column=column)
    return f


_FAST_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(?:\.\d+)?$")


@functools.lru_cache(maxsize=4096)
def _minute_epoch(prefix: str) -> float:
    return dt.datetime.fromisoformat(prefix.replace(" ", "T")).replace(tzinfo=dt.UTC).timestamp()


def _iso(value: Any, path: str, row: int, column: str) -> float:
    text = str(value).strip()
    if _FAST_ISO.match(text):  # zone-less "YYYY-MM-DD HH:MM:SS[.f]": cache the minute, add the seconds
        try:
            return _minute_epoch(text[:16]) + float(text[17:])
        except ValueError:
            pass  # e.g. month 13: let the full parser raise the error
    try:
        return parse_timestamp(text)
    except ValueError:
        raise TraceError(f"cannot parse timestamp {value!r} (expected YYYY-MM-DD HH:MM:SS[.f])", path=path,
                         row=row, column=column) from None


def _csv_rows(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield (1-based data row, row dict); raises TraceError on a missing column or short row."""
    with _open_text(path) as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        if not header:
            raise TraceError("trace file is empty (no header)", path=str(path))
        reader.fieldnames = header
        for col in required:
            if col not in header:
                raise TraceError(f"missing column {col!r}; columns are {header}", path=str(path), row=0, column=col)
        for i, rec in enumerate(reader, start=1):
            if not any((v or "").strip() for k, v in rec.items() if k is not None):
                continue  # blank line
            for col in required:
                if rec.get(col) is None:
                    raise TraceError("row is missing a value", path=str(path), row=i, column=col)
            yield i, rec


def _jsonl_rows(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, Any]]]:
    with _open_text(path) as fh:
        for i, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TraceError(f"invalid JSON: {exc.msg}", path=str(path), row=i) from None
            if not isinstance(rec, dict):
                raise TraceError("each JSONL line must be an object", path=str(path), row=i)
            for col in required:
                if col not in rec:
                    raise TraceError(f"missing field {col!r}", path=str(path), row=i, column=col)
            yield i, rec


def _zero_output(out: list[int]) -> list[bool] | None:
    """``failed`` flags for rows with no output token (None when there is none)."""
    flags = [o == 0 for o in out]
    return flags if any(flags) else None


def _finish(
    path: Path,
    name: str | None,
    times: list[float],
    inp: list[int],
    out: list[int],
    source: list[str] | None,
    failed: list[bool] | None,
    meta: dict[str, Any],
    epoch: bool,
    extra: dict[str, list[Any]] | None = None,
) -> Trace:
    if not times:
        raise TraceError("trace holds no request", path=str(path))
    t = np.asarray(times, dtype=np.float64)
    order = None
    if np.any(np.diff(t) < 0):
        order = np.argsort(t, kind="stable")
        n_bad = int(np.sum(np.diff(t) < 0))
        msg = f"{path}: {n_bad} rows out of arrival-time order; sorted"
        warnings.warn(msg, TraceOrderWarning, stacklevel=3)
        log.warning(msg)
        t = t[order]

    def arr(values: list[Any] | None, dtype: Any) -> np.ndarray | None:
        if values is None:
            return None
        a = np.asarray(values, dtype=dtype)
        return a[order] if order is not None else a

    t0 = float(t[0])
    meta = dict(meta)
    meta["path"] = str(path)
    meta["t0_s"] = t0
    meta["clock"] = "posix" if epoch else "file"
    for key, values in (extra or {}).items():
        meta[key] = [values[j] for j in order] if order is not None else values
    return Trace(
        arrival_s=t - t0,
        input_tokens=arr(inp, np.int64),
        output_tokens=arr(out, np.int64),
        source=arr(source, object),
        failed=arr(failed, bool),
        name=name or path.name,
        meta=meta,
    )


def load_azure(path: str | Path, *, source: str | None = None, name: str | None = None) -> Trace:
    """Load an Azure LLM inference trace CSV (2023 code/conv, 2024 week-long).

    Args:
        path: CSV file (optionally ``.gz``) with ``TIMESTAMP``, ``ContextTokens``, ``GeneratedTokens``.
        source: source tag for every request (default: ``"code"``/``"conv"`` when the file name
            contains it, else None).
        name: label of the trace (default: the file name).

    Returns:
        A :class:`Trace`; ``meta["t0_s"]`` holds the first request's POSIX time (naive
        timestamps read as UTC, ``meta["clock"] == "posix"``) so traces of one clock can be merged.

    Raises:
        TraceError: missing column, unparsable timestamp, negative/non-numeric tokens, empty file.
    """
    p = Path(path)
    cols = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
    times: list[float] = []
    inp: list[int] = []
    out: list[int] = []
    sp = str(p)
    for i, rec in _csv_rows(p, cols):
        times.append(_iso(rec["TIMESTAMP"], sp, i, "TIMESTAMP"))
        inp.append(_int_tokens(rec["ContextTokens"], sp, i, "ContextTokens"))
        out.append(_int_tokens(rec["GeneratedTokens"], sp, i, "GeneratedTokens"))
    if source is None:
        low = p.name.lower()
        source = "code" if "code" in low else "conv" if "conv" in low else None
    src = [source] * len(times) if source is not None else None
    return _finish(p, name, times, inp, out, src, _zero_output(out), {"format": "azure"}, epoch=True)


def load_burstgpt(path: str | Path, *, name: str | None = None) -> Trace:
    """Load a BurstGPT CSV.

    Columns: ``Timestamp`` (seconds), ``Model``, ``Request tokens``, ``Response tokens``,
    ``Total tokens``, ``Log Type``. ``Model`` becomes the source tag, ``Log Type`` goes to
    ``meta["log_type"]``. Rows with ``Response tokens == 0`` are failed requests: kept and flagged
    in ``Trace.failed`` (BurstGPT README).

    Raises:
        TraceError: missing column, bad timestamp, negative/non-numeric tokens, empty file.
    """
    p = Path(path)
    sp = str(p)
    cols = ("Timestamp", "Model", "Request tokens", "Response tokens")
    times: list[float] = []
    inp: list[int] = []
    out: list[int] = []
    src: list[str] = []
    log_type: list[str] = []
    for i, rec in _csv_rows(p, cols):
        times.append(_number(rec["Timestamp"], sp, i, "Timestamp"))
        inp.append(_int_tokens(rec["Request tokens"], sp, i, "Request tokens"))
        out.append(_int_tokens(rec["Response tokens"], sp, i, "Response tokens"))
        src.append(rec["Model"].strip())
        log_type.append((rec.get("Log Type") or "").strip())
    failed = [o == 0 for o in out]
    return _finish(p, name, times, inp, out, src, failed, {"format": "burstgpt"}, epoch=False,
                   extra={"log_type": log_type})


def load_mooncake(path: str | Path, *, name: str | None = None) -> Trace:
    """Load a Mooncake JSONL trace (``timestamp`` in ms, ``input_length``, ``output_length``,
    ``hash_ids``). The per-request ``hash_ids`` (prefix-cache block ids) go to ``meta["hash_ids"]``.

    Raises:
        TraceError: invalid JSON line, missing field, bad values, empty file.
    """
    p = Path(path)
    sp = str(p)
    times: list[float] = []
    inp: list[int] = []
    out: list[int] = []
    hashes: list[Any] = []
    for i, rec in _jsonl_rows(p, ("timestamp", "input_length", "output_length")):
        times.append(_number(rec["timestamp"], sp, i, "timestamp") * 1e-3)
        inp.append(_int_tokens(rec["input_length"], sp, i, "input_length"))
        out.append(_int_tokens(rec["output_length"], sp, i, "output_length"))
        hashes.append(rec.get("hash_ids"))
    return _finish(p, name, times, inp, out, None, _zero_output(out), {"format": "mooncake"}, epoch=False,
                   extra={"hash_ids": hashes})


def load_generic(path: str | Path, mapping: Mapping[str, str], *, name: str | None = None) -> Trace:
    """Load any CSV or JSONL trace with a column mapping.

    Args:
        path: ``.csv``/``.tsv`` (comma/tab separated, header row) or ``.jsonl``/``.json`` (one object
            per line), optionally ``.gz``.
        mapping: oserve field -> column name. Required keys ``timestamp``, ``input_tokens``,
            ``output_tokens``; optional ``source`` and ``failed`` (truthy: ``1``/``true``/``yes``)
            columns, and ``timestamp_unit``: one of ``s`` (default), ``ms``, ``us``, ``ns``, ``iso``
            (a date-time string).

    Raises:
        TraceError: mapping lacks a required key or names an unknown unit, missing column, bad
            values, empty file.
    """
    p = Path(path)
    sp = str(p)
    for key in ("timestamp", "input_tokens", "output_tokens"):
        if key not in mapping:
            raise TraceError(f"mapping lacks required key {key!r} (needs timestamp, input_tokens, output_tokens)",
                             path=sp, column=key)
    unit = mapping.get("timestamp_unit", "s")
    if unit not in TIMESTAMP_UNITS:
        raise TraceError(f"unknown timestamp_unit {unit!r}; allowed {list(TIMESTAMP_UNITS)}", path=sp)
    scale = TIMESTAMP_UNITS[unit]
    c_t, c_in, c_out = mapping["timestamp"], mapping["input_tokens"], mapping["output_tokens"]
    c_src, c_fail = mapping.get("source"), mapping.get("failed")
    required = tuple(c for c in (c_t, c_in, c_out, c_src, c_fail) if c)
    suffix = _base_suffix(p)
    rows: Iterator[tuple[int, dict[str, Any]]]
    if suffix in (".jsonl", ".json", ".ndjson"):
        rows = _jsonl_rows(p, required)
    elif suffix == ".tsv":
        rows = _tsv_rows(p, required)
    else:
        rows = _csv_rows(p, required)
    parse_t: Callable[[Any, str, int, str], float] = _iso if scale is None else _number
    times: list[float] = []
    inp: list[int] = []
    out: list[int] = []
    src: list[str] | None = [] if c_src else None
    failed: list[bool] | None = [] if c_fail else None
    for i, rec in rows:
        t = parse_t(rec[c_t], sp, i, c_t)
        times.append(t if scale is None else t * scale)
        inp.append(_int_tokens(rec[c_in], sp, i, c_in))
        out.append(_int_tokens(rec[c_out], sp, i, c_out))
        if src is not None:
            src.append(str(rec[c_src]))
        if failed is not None:
            failed.append(str(rec[c_fail]).strip().lower() in ("1", "true", "yes", "y", "t"))
    return _finish(p, name, times, inp, out, src, failed, {"format": "generic", "mapping": dict(mapping)},
                   epoch=scale is None)


def _tsv_rows(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    with _open_text(path) as fh:
        reader = csv.DictReader(fh, delimiter="\t")
        header = [h.strip() for h in (reader.fieldnames or [])]
        if not header:
            raise TraceError("trace file is empty (no header)", path=str(path))
        reader.fieldnames = header
        for col in required:
            if col not in header:
                raise TraceError(f"missing column {col!r}; columns are {header}", path=str(path), row=0, column=col)
        yield from enumerate(reader, start=1)


def _sniff(p: Path) -> str:
    """Guess the format from the first line of the file."""
    with _open_text(p) as fh:
        first = fh.readline()
    if not first.strip():
        raise TraceError("trace file is empty", path=str(p))
    if first.lstrip().startswith("{"):
        try:
            keys = set(json.loads(first))
        except (json.JSONDecodeError, TypeError):
            keys = set()
        if {"timestamp", "input_length", "output_length"} <= keys:
            return "mooncake"
    else:
        header = {h.strip() for h in next(csv.reader([first]))}
        if {"TIMESTAMP", "ContextTokens", "GeneratedTokens"} <= header:
            return "azure"
        if {"Timestamp", "Request tokens", "Response tokens"} <= header:
            return "burstgpt"
    raise TraceError(
        "cannot detect the trace format from the first line; pass fmt='azure'|'burstgpt'|'mooncake' "
        "or fmt='generic' with a column mapping", path=str(p), row=0,
    )


def load_trace(path: str | Path, fmt: str = "auto", mapping: Mapping[str, str] | None = None,
               **kwargs: Any) -> Trace:
    """Load a trace, detecting its format from its header when ``fmt="auto"``.

    Args:
        path: trace file.
        fmt: one of :data:`FORMATS`. ``"generic"`` needs ``mapping``.
        mapping: column mapping for ``"generic"`` (see :func:`load_generic`); given with
            ``fmt="auto"`` it selects the generic loader.
        **kwargs: passed to the format's loader (e.g. ``name``).

    Raises:
        TraceError: unknown format, undetectable format, missing file, or any loader error.
    """
    p = Path(path)
    if fmt not in FORMATS:
        raise TraceError(f"unknown trace format {fmt!r}; allowed {list(FORMATS)}", path=str(p))
    if not p.is_file():
        raise TraceError("trace file not found", path=str(p))
    if fmt == "auto":
        fmt = "generic" if mapping is not None else _sniff(p)
    if fmt == "generic":
        if mapping is None:
            raise TraceError("fmt='generic' needs a column mapping", path=str(p))
        return load_generic(p, mapping, **kwargs)
    loader = {"azure": load_azure, "burstgpt": load_burstgpt, "mooncake": load_mooncake}[fmt]
    return loader(p, **kwargs)
