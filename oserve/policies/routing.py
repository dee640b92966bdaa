"""The router's choice function: which ready replica serves one request (pure).

:func:`choose_replica` takes the ready candidates, their outstanding request counts and
(optionally) the plan's routing weights of the request's class, and returns a replica id. It reads
no clock and keeps no state: the stateful :class:`oserve.server.router.Router` (live) and the
simulator (:mod:`oserve.sim.engine`) both call it.

Policy:

1. Candidates fit ``needed_tokens`` (prompt tokens + ``max_tokens``) within their effective
   context length.
2. Without routing weights for the class (no plan yet): least outstanding requests; ties go to the
   replica that has been given fewer requests so far, then to the earliest added. With
   ``pending_prefill_tokens`` (the ``prefill-tokens`` replica load), least pending prefill tokens first
   (prompt tokens routed to the replica and not yet prefilled), then least outstanding requests.
3. With weights ``{variant: weight}`` for the class: a variant is picked by smooth weighted
   round-robin (nginx's algorithm: each pick adds every eligible variant's weight to its credit,
   takes the largest credit and subtracts the eligible total from it), which is deterministic and
   spreads picks in proportion to the weights; then the least loaded (as in 2) within that variant.
   Only variants with at least one candidate are eligible.

Why pending prefill tokens: a new request's TTFT waits for the prompts queued ahead of it on its replica,
and a count of requests does not see their size. One 4,000-token prompt in prefill is 1 outstanding
request, while 5 short requests in decode are 5, so least outstanding sends the next request behind the
long prefill. Measured in the simulator on the Azure 2023 conv trace (Llama-2-70B, 4 x 8 A100, first
300 s, SLO TTFT 1 s / TPOT 0.1 s), SLO attainment of 16 x int8 TP2 at 6.2x / 6.37x the trace's rate:
least outstanding requests 0.916 / 0.893, round-robin 0.927 / 0.903, least pending prefill tokens
0.957 / 0.935 (8 x int8 TP4: 0.897 / 0.849, 0.916 / 0.861, 0.930 / 0.885); bench/results/replica_load.json.
4. A class with weights none of whose variants has a candidate (or a class missing from a
   non-empty routing table) falls back to any candidate, and the fallback is flagged.

Batch limits: :func:`open_candidates` keeps the candidates with a free slot (outstanding requests
below the replica's in-flight limit, its variant's ``max_num_seqs``). The router and the simulator
choose among open candidates only; a request none of whose candidates is open waits in the
router-side queue (:mod:`oserve.server.wait_queue`), not in one engine's queue.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

from oserve.errors import ConfigError

__all__ = ["Candidate", "Choice", "REPLICA_LOADS", "check_replica_load", "choose_replica", "open_candidates"]

REPLICA_LOADS = ("requests", "prefill-tokens")
"""How the router measures a replica's load within a variant: outstanding requests, or pending prefill
tokens first (the default of ``server.replica_load``, ``routing.replica_load`` and :class:`~oserve.server.router.Router`;
see the module docstring)."""


class Candidate(NamedTuple):
    """A ready replica as the choice function sees it.

    Attributes:
        replica_id: the replica's id.
        variant: its deployment variant.
        max_model_len: its effective context length, tokens.
    """

    replica_id: str
    variant: str
    max_model_len: int


class Choice(NamedTuple):
    """Result of :func:`choose_replica`.

    Attributes:
        replica_id: the chosen replica, or None when no candidate fits.
        fallback: True when the class had routing weights (or a routing table exists) but none of
            its variants had a candidate, so any candidate was taken.
        credit: the class's new smooth-WRR credits (variant -> credit), or None when weights were
            not used.
    """

    replica_id: str | None
    fallback: bool
    credit: dict[str, float] | None


def check_replica_load(value: str) -> str:
    """``value`` if it is one of :data:`REPLICA_LOADS`.

    Raises:
        ConfigError: anything else (field ``replica_load``, allowed ``requests, prefill-tokens``).
    """
    if value not in REPLICA_LOADS:
        raise ConfigError(f"replica_load must be one of {REPLICA_LOADS}, got {value!r}", field="replica_load",
                          allowed=", ".join(REPLICA_LOADS))
    return value


def _least_outstanding(cands: Iterable[Candidate], outstanding: Mapping[str, int],
                       served: Mapping[str, int], pending: Mapping[str, int] | None = None) -> str | None:
    best: str | None = None
    best_key: tuple[int, int, int] = (0, 0, 0)
    for c in cands:
        rid = c.replica_id
        key = (pending.get(rid, 0) if pending is not None else 0, outstanding.get(rid, 0), served.get(rid, 0))
        if best is None or key < best_key:
            best, best_key = c.replica_id, key
    return best


def choose_replica(
    candidates: Sequence[Candidate],
    outstanding: Mapping[str, int],
    *,
    needed_tokens: int,
    weights: Mapping[str, float] | None = None,
    credit: Mapping[str, float] | None = None,
    served: Mapping[str, int] | None = None,
    routing_active: bool = False,
    pending_prefill_tokens: Mapping[str, int] | None = None,
) -> Choice:
    """Choose a replica for one request (pure: reads its inputs, returns a value).

    Args:
        candidates: ready replicas, in the order they were added.
        outstanding: requests in flight per replica id.
        needed_tokens: prompt tokens + ``max_tokens`` of the request; candidates whose
            ``max_model_len`` is smaller are skipped.
        weights: the class's routing weights, variant -> weight (>= 0); None or empty: no weights.
        credit: the class's smooth-WRR credits from the previous pick (variant -> credit).
        served: requests given to each replica so far (tie-break: fewer first).
        routing_active: a routing table exists, so a class without weights counts as a fallback.
        pending_prefill_tokens: prompt tokens routed to each replica id and not yet prefilled (tokens); when
            given, the least of them decides before the outstanding count (None: least outstanding requests).

    Returns:
        A :class:`Choice`; ``replica_id`` is None when no candidate fits ``needed_tokens``.
    """
    served = served or {}
    fits = [c for c in candidates if c.max_model_len >= needed_tokens]
    if not fits:
        return Choice(None, False, None)
    if weights:
        eligible = {c.variant for c in fits}
        active = {v: w for v, w in weights.items() if w > 0 and v in eligible}
        if active:
            new_credit = {v: (credit or {}).get(v, 0.0) + w for v, w in active.items()}
            variant = max(active, key=lambda v: new_credit[v])
            new_credit[variant] -= sum(active.values())
            # Keep credits of variants that are momentarily ineligible.
            for v, c in (credit or {}).items():
                new_credit.setdefault(v, c)
            chosen = _least_outstanding((c for c in fits if c.variant == variant), outstanding, served,
                                        pending_prefill_tokens)
            return Choice(chosen, False, new_credit)
        return Choice(_least_outstanding(fits, outstanding, served, pending_prefill_tokens), True, None)
    return Choice(_least_outstanding(fits, outstanding, served, pending_prefill_tokens), routing_active, None)


def open_candidates(candidates: Sequence[Candidate], outstanding: Mapping[str, int],
                    limits: Mapping[str, int | None]) -> list[Candidate]:
    """The candidates with a free slot: outstanding requests below their in-flight limit (pure).

    Args:
        candidates: ready replicas, in the order they were added.
        outstanding: requests in flight per replica id.
        limits: in-flight limit per replica id (its variant's batch limit ``max_num_seqs``,
            requests); None or a missing id means unlimited.

    Returns:
        The open candidates, in their given order.
    """
    out = []
    for c in candidates:
        lim = limits.get(c.replica_id)
        if lim is None or outstanding.get(c.replica_id, 0) < lim:
            out.append(c)
    return out
