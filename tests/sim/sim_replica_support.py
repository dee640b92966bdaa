"""Shared helper of the simulator's replica tests: serve one request on an otherwise idle replica."""

from __future__ import annotations

from oserve.sim.replica import SimReplica
from oserve.sim.request import SimRequest


def serve_alone(rep: SimReplica, prompt: int = 300, out: int = 20) -> SimRequest:
    """Add one request (``prompt`` input, ``out`` output tokens, arriving at 0 s) to ``rep`` and step the
    replica's iterations until it is idle; the request, with its first-token and finish times (seconds)."""
    q = SimRequest(0, 0.0, prompt, out)
    rep.add(q)
    t, end = 0.0, rep.start_iteration(0.0)
    while end is not None:
        t = end
        rep.finish_iteration(t)
        end = rep.start_iteration(t)
    return q
