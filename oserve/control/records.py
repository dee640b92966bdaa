"""What a switch did: the records the :class:`~oserve.control.switcher.Switcher` returns.

:class:`StepRecord` is one step (start, warm, route, drain, stop, cancel, skip, wake, park); :class:`SwitchResult`
is one transition with its status (:func:`oserve.control.rules.switch_status`) and steps. Both are
frozen values, the same live and in the simulator.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Literal, TypeVar

from oserve.control.rules import SwitchStatus
from oserve.types import Plan, ReplicaPlacement

__all__ = ["StepKind", "StepRecord", "SwitchResult", "notify_observers"]

log = logging.getLogger(__name__)
T = TypeVar("T")

StepKind = Literal["start", "warm", "route", "drain", "stop", "cancel", "skip", "wake", "park"]


@dataclass(frozen=True)
class StepRecord:
    """What one step did.

    Attributes:
        kind: ``start``, ``warm``, ``route``, ``drain``, ``stop``, ``cancel``, ``skip``, ``wake`` (a
            parked replica activated) or ``park`` (a replica parked).
        replica_id: the replica concerned (empty for ``route``).
        variant / node: its placement.
        ok: False when the step failed.
        detail: error text, aborted count, or why a step was skipped.
        started_s / finished_s: clock times, seconds.
    """

    kind: StepKind
    replica_id: str
    variant: str
    node: str
    ok: bool
    detail: str
    started_s: float
    finished_s: float


@dataclass(frozen=True)
class SwitchResult:
    """The outcome of one transition.

    Attributes:
        target: the plan asked for.
        status: ``applied`` (the real replicas match the target), ``unchanged`` (nothing to do),
            ``partial`` (some step failed or was skipped; see ``steps``), ``failed`` (no step
            succeeded), or ``superseded`` (a newer target interrupted it, or it never started).
        steps: the steps in the order they finished.
        started_s / finished_s: clock times, seconds; ``duration_s`` their difference.
        actual: the real deployment afterwards (ready replicas and the routing in force).
        make_before_break: whether the transition was planned make-before-break.
        capacity_gap_classes: classes that had no capacity for a moment (rolling without choice).
        unplaceable: target placements that could not fit.
        aborted_requests: requests aborted by drain timeouts.
        migrated_requests: requests a migrating drain handed over (the endpoint resumes them elsewhere).
    """

    target: Plan
    status: SwitchStatus
    steps: tuple[StepRecord, ...]
    started_s: float
    finished_s: float
    actual: Plan
    make_before_break: bool = True
    capacity_gap_classes: tuple[str, ...] = ()
    unplaceable: tuple[ReplicaPlacement, ...] = ()
    aborted_requests: int = 0
    migrated_requests: int = 0

    @property
    def duration_s(self) -> float:
        """Transition time, seconds."""
        return self.finished_s - self.started_s

    @property
    def replicas_changed(self) -> bool:
        """True when a replica was started, cancelled, stopped or skipped (not a routing-only change)."""
        return any(s.kind != "route" for s in self.steps)

    @property
    def failed_steps(self) -> tuple[StepRecord, ...]:
        """Steps that failed."""
        return tuple(s for s in self.steps if not s.ok)

    def to_dict(self) -> dict:
        """A JSON-ready summary."""
        return {
            "status": self.status,
            "started_s": self.started_s,
            "finished_s": self.finished_s,
            "duration_s": self.duration_s,
            "replicas_changed": self.replicas_changed,
            "make_before_break": self.make_before_break,
            "capacity_gap_classes": list(self.capacity_gap_classes),
            "unplaceable": [p.model_dump(mode="json") for p in self.unplaceable],
            "aborted_requests": self.aborted_requests,
            "migrated_requests": self.migrated_requests,
            "target": self.target.model_dump(mode="json"),
            "actual": self.actual.model_dump(mode="json"),
            "steps": [asdict(s) for s in self.steps],
        }


def notify_observers(callbacks: list[Callable[[T], None]], value: T) -> None:
    """Call each observer with ``value``; one that raises is logged (it must not stop the switcher)."""
    for cb in callbacks:
        try:
            cb(value)
        except Exception:  # noqa: BLE001 - an observer must not stop the switcher
            log.exception("switcher observer %r raised", cb)
