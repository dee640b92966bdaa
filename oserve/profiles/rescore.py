"""Per-class capacities recomputed at a serving config's request lengths and SLO.

A profile table stores, per variant, the iteration-time model it measured (or modelled) and the
per-class capacities derived from it (:mod:`oserve.profiles.capacity`) at the *profiling* config's
class lengths and SLO. A workload whose classes have other representative lengths (or a deployment
with another SLO) needs other capacities: the demo's trace, for example, has long prompts of 208
tokens on average where the profile used 256, and long outputs of 70 tokens where it used 48. The
iteration-time model is what was measured, so the capacities are recomputed from it with the same
formula as at profiling time (no engine runs); the rest of the table (memory, start and wake times,
quality) is kept.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from oserve.profiles.capacity import class_capacity
from oserve.profiles.table import ProfileTable, VariantProfile
from oserve.types import SLO, ClassScheme

__all__ = ["rescore_table", "unservable_classes", "planning_table"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _RowShape:
    """A table row's engine limits in the form :func:`~oserve.profiles.capacity.class_capacity` takes."""

    max_model_len: int
    kv_capacity_tokens: int
    max_num_seqs: int
    max_num_batched_tokens: int

    @classmethod
    def of(cls, row: VariantProfile) -> _RowShape:
        # the table stores the replica's whole KV cache (all devices) and its bytes per token,
        # as oserve.profiles.variants.Variant.kv_capacity_tokens divides them
        return cls(max_model_len=row.max_model_len,
                   kv_capacity_tokens=int(row.kv_cache_bytes // max(1, row.kv_bytes_per_token)),
                   max_num_seqs=row.max_num_seqs, max_num_batched_tokens=row.max_num_batched_tokens)


def rescore_table(table: ProfileTable, scheme: ClassScheme, slo: SLO) -> ProfileTable:
    """``table`` with every variant's per-class capacity recomputed at ``scheme``'s expected lengths
    and ``slo``, from the variant's stored iteration-time model.

    Formula: :mod:`oserve.profiles.capacity` (the one the table was built with, so rescoring at the
    profiling config's classes and SLO reproduces the stored capacities).

    Args:
        table: a measured or modelled profile table.
        scheme: the request classes to profile (names, token ranges, expected input/output tokens).
        slo: TTFT/TPOT targets the capacities must meet, s.

    Returns:
        A new table whose ``class_names`` are ``scheme.names`` and whose ``slo`` is ``slo``; memory,
        start/wake times, iteration models and quality are unchanged.
    """
    variants = {
        name: row.model_copy(update={"classes": {c.name: class_capacity(row.iteration, _RowShape.of(row), c, slo)
                                                 for c in scheme.classes}})
        for name, row in table.variants.items()
    }
    return table.model_copy(update={"variants": variants, "slo": slo, "class_names": list(scheme.names)})


def unservable_classes(table: ProfileTable) -> list[str]:
    """Classes of ``table`` that no variant serves within its SLO (capacity 0 req/s in every row), in
    ``table.class_names`` order: e.g. every class after rescoring at an SLO no variant meets, or a
    class whose expected lengths fit no variant's ``max_model_len``. The planner plans no replica
    for such a class and the controller raises its missing-class alarm when it has demand
    (:mod:`oserve.control.guards`); callers warn about them at load time.
    """
    return [c for c in table.class_names
            if not any(c in row.classes and row.classes[c].capacity_rps > 0 for row in table.variants.values())]


def planning_table(table: ProfileTable, scheme: ClassScheme, slo: SLO) -> ProfileTable:
    """:func:`rescore_table`, warning (log) about the classes no variant then serves: what the serve
    stack, the simulator and the demo plan with when ``recompute_capacities`` is set."""
    table = rescore_table(table, scheme, slo)
    if bad := unservable_classes(table):
        log.warning("recompute_capacities: no variant serves class(es) %s within the SLO (TTFT %.3g s, TPOT %.3g s) "
                    "at their expected lengths; demand for them raises the missing-class alarm and running "
                    "replicas are kept", ", ".join(bad), slo.ttft_s, slo.tpot_s)
    return table
