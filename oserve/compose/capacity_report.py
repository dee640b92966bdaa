"""Reporting of capacity studies: a JSON-safe copy and a Markdown table.

Of :func:`oserve.compose.capacity.capacity_study`'s result.
"""

from __future__ import annotations

import math
from typing import Any

from oserve.sim.report import finite_json

__all__ = ["finite_json", "format_capacity_table"]


def _f(x: Any, nd: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return "-" if not math.isfinite(x) else f"{x:.{nd}g}"
    return str(x)


def format_capacity_table(study: dict[str, Any]) -> str:
    """A Markdown table of :func:`capacity_study`'s rows."""
    head = ("| policy | variant | capacity scale | capacity (req/s) | vs plain vLLM | vs best static | of oracle "
            f"| at scale {_f(study['common_scale'])}: attainment | p99 TTFT (s) | p99 TPOT (s) | p99 E2E (s) |")
    lines = [head, "|---|---|" + "---:|" * 9]
    for r in study["rows"]:
        c = r["at_common_load"] or {}
        lines.append(f"| {r['policy']} | {r['variant'] or '-'} | {_f(r['capacity_scale'])} | {_f(r['capacity_rps'])} "
                     f"| {_f(r['vs_plain'])} | {_f(r['vs_best_static'])} | {_f(r['oracle_fraction'])} "
                     f"| {_f(c.get('slo_attainment'))} | {_f(c.get('ttft_p99_s'))} | {_f(c.get('tpot_p99_s'))} "
                     f"| {_f(c.get('e2e_p99_s'))} |")
    return "\n".join(lines)
