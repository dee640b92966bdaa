"""``oserve status URL``: print a running server's plan, replicas, decisions and switches.

Reads ``GET URL/admin/plan`` (with ``--api-key`` or ``OSERVE_API_KEY`` when the server has a key)
and prints it readably, or as JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from typing import Any

__all__ = ["register", "fetch_status", "format_status"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``status`` subcommand."""
    p = subparsers.add_parser("status", help="show a running server's plan, replicas and last decisions")
    p.add_argument("url", help="base URL of the server, e.g. http://127.0.0.1:8000")
    p.add_argument("--api-key", default=os.environ.get("OSERVE_API_KEY"),
                   help="API key (default: $OSERVE_API_KEY)")
    p.add_argument("--json", action="store_true", help="print the raw JSON")
    p.add_argument("--timeout-s", type=_timeout_s, default=10.0, help="HTTP timeout, seconds (> 0)")
    p.set_defaults(func=_run)


def _timeout_s(text: str) -> float:
    """``--timeout-s``: a finite number of seconds > 0 (argparse turns the error into a usage error)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds > 0, got {text}")
    return value


def fetch_status(url: str, api_key: str | None = None, timeout_s: float = 10.0, transport: Any = None) -> dict:
    """GET ``url/admin/plan`` and return the JSON body.

    Raises:
        RuntimeError: the server answered an error (its message is included) or could not be reached.
    """
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        with httpx.Client(timeout=timeout_s, transport=transport) as client:
            resp = client.get(url.rstrip("/") + "/admin/plan", headers=headers)
    except httpx.HTTPError as exc:
        raise RuntimeError(f"cannot reach {url}: {exc}") from exc
    if resp.status_code != 200:
        try:
            msg = resp.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            msg = resp.text[:200]
        raise RuntimeError(f"{url} answered {resp.status_code}: {msg}")
    return resp.json()


def _plan_lines(plan: dict | None) -> list[str]:
    if not plan:
        return ["  (none)"]
    counts: dict[tuple[str, str], int] = {}
    for r in plan.get("replicas", []):
        counts[(r["variant"], r["node"])] = counts.get((r["variant"], r["node"]), 0) + 1
    lines = [f"  {n} x {v} on {node}" for (v, node), n in sorted(counts.items())] or ["  no replicas"]
    parked: dict[tuple[str, str], int] = {}
    for r in plan.get("parked", []):
        parked[(r["variant"], r["node"])] = parked.get((r["variant"], r["node"]), 0) + 1
    lines += [f"  {n} x {v} on {node} (parked)" for (v, node), n in sorted(parked.items())]
    for cls, ws in sorted(plan.get("routing", {}).items()):
        share = ", ".join(f"{v} {w:.0%}" for v, w in sorted(ws.items(), key=lambda kv: -kv[1]))
        lines.append(f"  route {cls}: {share}")
    return lines


def _rates(d: dict[str, float]) -> str:
    return ", ".join(f"{c} {v:.2f}" for c, v in d.items()) or "-"


def format_status(status: dict) -> str:
    """Render a ``GET /admin/plan`` body as text."""
    out = [f"oserve status  (clock {status.get('time_s', 0):.1f} s, "
           f"{'running' if status.get('running') else 'stopped'}"
           f"{', switching' if status.get('busy') else ''}{', PINNED' if status.get('pinned') else ''})",
           "", "Current deployment:"]
    out += _plan_lines(status.get("current_plan"))
    out += ["", "Target plan:"] + _plan_lines(status.get("target_plan"))
    out += ["", "Replicas:"]
    for r in status.get("replicas", []):
        out.append(f"  {r['replica_id']:<28} {r['variant']:<16} {r['node']}:{r['device_ids']}  {r['state']}")
    if not status.get("replicas"):
        out.append("  (none)")
    out += ["", "Last decisions (req/s):"]
    for d in status.get("decisions", []):
        counts = ", ".join(f"{n} x {v}" for v, n in sorted(_count(d["plan"]).items()))
        out.append(f"  t={d['time_s']:.1f}s {'CHANGE' if d['changed'] else 'keep  '} [{counts}] "
                   f"outcome={d.get('outcome', '?')}")
        out.append(f"      observed: {_rates(d.get('observed_rps', {}))}")
        out.append(f"      forecast: {_rates(d.get('forecast_rps', {}))}")
        out.append(f"      reason: {d.get('reason', '')}")
    if not status.get("decisions"):
        out.append("  (none)")
    out += ["", "Last switches:"]
    for s in status.get("switches", []):
        failed = [st for st in s.get("steps", []) if not st.get("ok", True)]
        out.append(f"  {s['status']:<10} {s['duration_s']:.2f} s  "
                   f"{'make-before-break' if s.get('make_before_break') else 'rolling'}  "
                   f"aborted={s.get('aborted_requests', 0)}  steps={len(s.get('steps', []))}")
        for st in failed:
            out.append(f"      FAILED {st['kind']} {st['replica_id'] or st['variant']}: {st['detail']}")
    if not status.get("switches"):
        out.append("  (none)")
    return "\n".join(out)


def _count(plan: dict) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in plan.get("replicas", []):
        out[r["variant"]] = out.get(r["variant"], 0) + 1
    return out


def _run(args: argparse.Namespace) -> int:
    try:
        status = fetch_status(args.url, args.api_key, args.timeout_s)
    except RuntimeError as exc:
        from oserve.cli.errors import report

        return report(exc)
    print(json.dumps(status, indent=2) if args.json else format_status(status))
    return 0
