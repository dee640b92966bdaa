"""Switch decisions followed to their end: ``switches`` and ``reconfig_s`` as decisions and time-to-target.

A *switch* is a control decision whose plan changes the replica set (replica counts per
``(variant, node)``) relative to the target in force; a routing-only change is not one. The
:class:`TargetTracker` opens a :class:`TargetRecord` for each switch and closes it as

* ``reached``: the ready replicas match the target's replica set (``reconfig_s`` = that time minus
  the decision time, seconds), whatever transitions it took (a transition interrupted by a newer
  plan with the same replica set, or one that ended early, is a fragment, not a switch);
* ``superseded``: a later switch decided another replica set before this one was reached;
* ``abandoned``: the switcher finished working towards it (failed or partial starts, skipped
  drains) without reaching it and no newer switch replaced it;
* ``pending``: still open (at the end of a simulation: never reached).

The tracker is shared by the live orchestrator and the simulator; it reads no clock (times are
passed in) and does no I/O.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from oserve.types import Plan

__all__ = ["TargetRecord", "TargetTracker", "summarise_targets"]

TargetStatus = Literal["reached", "superseded", "abandoned", "pending"]


def _counts(plan: Plan | None) -> dict[str, int]:
    if plan is None:
        return {}
    return {f"{v}@{n}": k for (v, n), k in sorted(Counter((r.variant, r.node) for r in plan.replicas).items())}


@dataclass
class TargetRecord:
    """One switch decision and how it ended.

    Attributes:
        decided_s: time of the decision, seconds.
        replicas: the target replica set, ``"variant@node" -> count``.
        status: ``reached``, ``superseded``, ``abandoned`` or ``pending`` (module docstring).
        ended_s: when it was reached, superseded or abandoned, seconds (None while pending).
    """

    decided_s: float
    replicas: dict[str, int]
    status: TargetStatus = "pending"
    ended_s: float | None = None

    @property
    def reconfig_s(self) -> float | None:
        """Decision to target reached, seconds (None unless ``reached``)."""
        return None if self.status != "reached" or self.ended_s is None else self.ended_s - self.decided_s

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (with ``reconfig_s``)."""
        return {**asdict(self), "reconfig_s": self.reconfig_s}


@dataclass
class TargetTracker:
    """Follows each switch decision until its replica set is reached, superseded or abandoned.

    Call :meth:`decided` for each decision that changed the replica set, :meth:`observe` whenever
    the ready replicas may have changed (after each switch step and transition), and
    :meth:`transition_ended` when the switcher finishes a transition.

    Attributes:
        records: every switch so far, oldest first (closed ones and the open one).
        on_close: called with each record as it closes (e.g. to export a metric).
    """

    records: list[TargetRecord] = field(default_factory=list)
    on_close: list[Any] = field(default_factory=list)
    _open: TargetRecord | None = None

    @property
    def open(self) -> TargetRecord | None:
        """The switch being worked towards, or None."""
        return self._open

    def decided(self, now_s: float, plan: Plan, actual: Plan | None = None) -> TargetRecord | None:
        """A decision chose ``plan``; opens a record if its replica set differs from the open one's.

        Args:
            now_s: decision time, seconds.
            plan: the decided plan.
            actual: the ready replicas now; a target they already match is reached at once.

        Returns:
            The new record, or None when ``plan`` keeps the open target's replica set.
        """
        want = _counts(plan)
        if self._open is not None:
            if self._open.replicas == want:
                return None
            self._close("superseded", now_s)
        rec = TargetRecord(float(now_s), want)
        self.records.append(rec)
        self._open = rec
        if actual is not None:
            self.observe(now_s, actual)
        return rec

    def observe(self, now_s: float, actual: Plan) -> None:
        """The ready replicas are ``actual`` at ``now_s``: closes the open record as reached if they match."""
        if self._open is not None and _counts(actual) == self._open.replicas:
            self._close("reached", now_s)

    def transition_ended(self, now_s: float, target: Plan, actual: Plan, status: str) -> None:
        """The switcher ended a transition towards ``target`` with ``status``; ``actual`` is the result.

        A transition that was not superseded and left the open target unreached abandons it.
        """
        self.observe(now_s, actual)
        if self._open is not None and status != "superseded" and _counts(target) == self._open.replicas:
            self._close("abandoned", now_s)

    def _close(self, status: TargetStatus, now_s: float) -> None:
        rec = self._open
        assert rec is not None
        rec.status, rec.ended_s = status, float(now_s)
        self._open = None
        for cb in self.on_close:
            cb(rec)


def summarise_targets(records: list[TargetRecord] | list[dict[str, Any]]) -> dict[str, Any]:
    """``switches`` (decisions that changed the replica set), their outcomes, and ``reconfig_s`` statistics.

    Returns:
        ``switches``, ``switches_reached``, ``switches_superseded``, ``switches_abandoned``,
        ``switches_pending`` (counts) and ``reconfig_s`` (mean), ``reconfig_p50_s``, ``reconfig_max_s``
        over reached switches, seconds (None when none was reached).
    """
    rows = [r.to_dict() if isinstance(r, TargetRecord) else r for r in records]
    status = Counter(r["status"] for r in rows)
    times = sorted(float(r["reconfig_s"]) for r in rows if r.get("reconfig_s") is not None)
    mid = len(times) // 2
    p50 = None if not times else (times[mid] if len(times) % 2 else (times[mid - 1] + times[mid]) / 2)
    return {
        "switches": len(rows),
        "switches_reached": status["reached"], "switches_superseded": status["superseded"],
        "switches_abandoned": status["abandoned"], "switches_pending": status["pending"],
        "reconfig_s": sum(times) / len(times) if times else None,
        "reconfig_p50_s": p50, "reconfig_max_s": times[-1] if times else None,
    }
