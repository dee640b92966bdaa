"""Backlog as demand: requests already waiting become extra req/s over a drain window (pure).

The arrival rate alone hides work that is already waiting: after a burst, the window's arrival rate
falls while dozens of requests still wait, and a planner fed only the rate may plan *less* capacity
(down to zero replicas in an energy-saving objective) exactly when the queue needs more. The
controller therefore adds, per class, the rate at which the waiting requests must be served to meet
their TTFT SLO.

Rule (a documented choice), per class with ``n`` requests admitted and without a first token yet,
the oldest of which has waited ``a`` seconds, and SLO TTFT ``T``:

* ``a < min_age_fraction * T``: the backlog is young (normal prefill / batching delay): 0 extra
  req/s, so a steady load whose requests meet the SLO is not inflated;
* else ``n / max(T - a, min_drain_s)`` extra req/s: the waiting requests spread over the time
  left before the oldest misses the SLO, and at least over ``min_drain_s`` (requests already past
  their SLO still have to be served: they drain over ``min_drain_s``).
"""

from __future__ import annotations

import math

from oserve.errors import ConfigError

__all__ = ["backlog_rps", "check_backlog_params"]


def check_backlog_params(min_age_fraction: float, min_drain_s: float) -> None:
    """Raise :class:`ConfigError` naming the field when a backlog parameter is out of range.

    Args:
        min_age_fraction: in [0, 1].
        min_drain_s: > 0 seconds.
    """
    if not (math.isfinite(min_age_fraction) and 0.0 <= min_age_fraction <= 1.0):
        raise ConfigError(f"backlog_min_age_fraction must be in [0, 1], got {min_age_fraction}",
                          field="backlog_min_age_fraction", allowed="0..1 (fraction of the SLO TTFT)")
    if not (math.isfinite(min_drain_s) and min_drain_s > 0):
        raise ConfigError(f"backlog_min_drain_s must be > 0, got {min_drain_s}", field="backlog_min_drain_s",
                          allowed="> 0 seconds")


def backlog_rps(waiting: int, oldest_wait_s: float, slo_ttft_s: float, *, min_age_fraction: float = 0.5,
                min_drain_s: float = 10.0) -> float:
    """Extra demand of one class's waiting requests, req/s (see the module docstring).

    Args:
        waiting: requests admitted without a first token yet.
        oldest_wait_s: the oldest one's wait so far, seconds.
        slo_ttft_s: the TTFT SLO, seconds (> 0).
        min_age_fraction: backlogs younger than this fraction of ``slo_ttft_s`` count as 0.
        min_drain_s: shortest drain window, seconds (> 0).

    Returns:
        req/s >= 0.
    """
    if waiting <= 0 or oldest_wait_s < min_age_fraction * slo_ttft_s:
        return 0.0
    return float(waiting) / max(slo_ttft_s - oldest_wait_s, min_drain_s)
