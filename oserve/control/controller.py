"""The control decision: observed history -> forecast -> demand -> target plan. Pure, reads no clock.

One :class:`Controller` is shared by the live :class:`~oserve.control.orchestrator.Orchestrator` and by the
simulator: both call :meth:`Controller.tick` with the time, the monitor's snapshot and rate history,
and the plan currently deployed, and act on the returned :class:`Decision`. The controller does no
I/O and never reads a clock, so the same inputs give the same decisions in live and simulated runs
(given a deterministic forecaster and planner).

Demand rule (a documented choice): the demand handed to the planner for each class is
``max(forecast, observed)``. The forecaster already reacts to spikes (it may widen its bounds or
lift its point forecast when an observation exceeds its upper bound); the floor at the currently
observed rate is a safety rule of the controller: it never plans for less traffic than is arriving
now, so a forecast that predicts a fall does not scale capacity below today's load before the fall
happens. Set ``floor_at_observed=False`` to plan on the forecast alone.

Backlog (:mod:`oserve.control.backlog`): work already waiting is demand too. Per class, the
snapshot's ``waiting`` requests (admitted, no first token yet) whose oldest has waited at least
``backlog_min_age_fraction`` x SLO TTFT add ``waiting / max(SLO TTFT - oldest wait,
backlog_min_drain_s)`` req/s on top: ``demand = max(forecast, observed) + backlog``.

Forecast lead: a plan takes effect when its switch completes, so the controller forecasts at least
the expected switch time ahead: the horizon used is ``max(horizon_s, switch_lead_s)``, where
``switch_lead_s`` defaults to the slowest start time (``start_time_s``) among the table's variants.
A burst shorter than that lead is absorbed by the router (least-outstanding routing over the
replicas already running and the router-side queue), not by a switch.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

import numpy as np

from oserve.control.backlog import backlog_rps, check_backlog_params
from oserve.control.guards import floor_replicas, keep_running_capacity, missing_classes
from oserve.errors import OserveError, PlanningError
from oserve.profiles.table import ProfileTable
from oserve.types import ClassScheme, ClusterSpec, Demand, Plan

__all__ = ["Controller", "Decision", "ControllerInputError", "plans_equal", "placement_counts", "same_replicas",
           "bin_history"]

log = logging.getLogger(__name__)


class ControllerInputError(OserveError, ValueError):
    """An input of :meth:`Controller.tick` has the wrong shape or value.

    Attributes:
        field: the argument at fault.
        allowed: what it must be.
    """

    def __init__(self, message: str, *, field: str, allowed: str) -> None:
        super().__init__(f"{message} (field {field!r}; allowed: {allowed})")
        self.field = field
        self.allowed = allowed


@runtime_checkable
class _ForecastLike(Protocol):
    rates_rps: Any
    lower_rps: Any
    upper_rps: Any


class _ForecasterLike(Protocol):
    def fit(self, ts: np.ndarray, rates: np.ndarray) -> Any: ...

    def update(self, ts: np.ndarray, rates: np.ndarray) -> Any: ...

    def predict(self, horizon_s: float) -> _ForecastLike: ...


class _PlannerLike(Protocol):
    def plan(self, cluster: ClusterSpec, table: ProfileTable, demand: Demand, current: Plan | None) -> Plan: ...


class _SnapshotLike(Protocol):
    class_names: Any
    arrival_rates_rps: Any


def bin_history(ts: np.ndarray, rates: np.ndarray, bin_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Aggregate a per-second rate history into ``bin_s``-second bins of complete seconds.

    The live orchestrator and the simulator hand the controller the same binned history, so a
    forecaster sees the same series in both.

    Args:
        ts: second starts, seconds, shape ``(n,)`` (``WorkloadMonitor.rate_history()``).
        rates: per-class admissions per second, shape ``(n, k)``.
        bin_s: bin width, seconds (rounded to whole seconds, at least 1).

    Returns:
        ``(bin_starts_s (m,), mean rates_rps (m, k))``: only complete bins, aligned to multiples of
        ``bin_s``.
    """
    w = max(1, int(round(bin_s)))
    ts = np.asarray(ts, dtype=float)
    rates = np.asarray(rates, dtype=float)
    if ts.size == 0 or w == 1:
        return ts, rates
    idx = (ts // w).astype(np.int64)
    first, last = int(idx[0]), int(idx[-1])
    counts = np.bincount(idx - first, minlength=last - first + 1)
    sums = np.zeros((last - first + 1, rates.shape[1]))
    np.add.at(sums, idx - first, rates)
    complete = counts == w
    starts = (np.arange(first, last + 1) * w).astype(np.float64)
    return starts[complete], sums[complete] / w


def placement_counts(plan: Plan | None) -> Counter[tuple[str, str]]:
    """Number of replicas per ``(variant, node)`` of ``plan`` (empty for None)."""
    if plan is None:
        return Counter()
    return Counter((r.variant, r.node) for r in plan.replicas)


def _routing_key(plan: Plan | None, ndigits: int = 6) -> dict[str, dict[str, float]]:
    if plan is None:
        return {}
    return {
        c: {v: round(float(w), ndigits) for v, w in sorted(ws.items()) if round(float(w), ndigits) != 0.0}
        for c, ws in sorted(plan.routing.items())
    }


def plans_equal(a: Plan | None, b: Plan | None) -> bool:
    """True when two plans deploy the same replica counts per variant per node (active and parked)
    and route alike.

    Device ids, predicted goodput and the reason text are ignored: moving a replica to other
    cores of the same node is not a change worth a switch. Routing weights are compared to 6
    decimals; zero weights are ignored.
    """
    parked_a = a.parked_counts() if a is not None else {}
    parked_b = b.parked_counts() if b is not None else {}
    return placement_counts(a) == placement_counts(b) and parked_a == parked_b and _routing_key(a) == _routing_key(b)


@dataclass(frozen=True)
class Decision:
    """One control step's inputs, forecast, chosen plan and reason.

    Attributes:
        time_s: the time of the tick (the caller's clock), seconds.
        observed_rps: per-class arrival rate observed over the monitor's window, req/s.
        forecast_rps: per-class point forecast ``horizon_s`` ahead, req/s (equals the observed rate
            while the forecaster has too little history).
        demand: what the planner was asked to serve.
        plan: the target plan (the planner's, the pinned one, or the current one kept on error).
        changed: True when ``plan`` differs from the current plan (see :func:`plans_equal`).
        reason: why this plan: planner reason, ``pinned``, warm-up, or the error that kept the plan.
        forecast_lower_rps / forecast_upper_rps: the forecaster's bounds per class, req/s (empty
            when no forecast was made).
        horizon_s: forecast horizon used, seconds (``max(horizon_s, switch_lead_s)``).
        backlog_rps: per class, extra demand of the waiting requests, req/s (included in ``demand``).
        outcome: what happened when the plan was applied: ``"pending"`` until the orchestrator
            records it (``"unchanged"``, ``"applied"``, ``"failed: ..."``, ``"superseded"``).
        replicas_changed: True when the replica counts per (variant, node) differ from the current
            plan's (a switch that starts or stops replicas; ``changed`` is also True for a
            routing-only change).
        alarms: problems found in the inputs, e.g. ``"missing-class: C (no row in the profile
            table)"`` for a class with demand the table gives no capacity for
            (:func:`oserve.control.guards.missing_classes`).
    """

    time_s: float
    observed_rps: dict[str, float]
    forecast_rps: dict[str, float]
    demand: Demand
    plan: Plan
    changed: bool
    reason: str
    forecast_lower_rps: dict[str, float] = field(default_factory=dict)
    forecast_upper_rps: dict[str, float] = field(default_factory=dict)
    horizon_s: float = 0.0
    backlog_rps: dict[str, float] = field(default_factory=dict)
    outcome: str = "pending"
    replicas_changed: bool = False
    alarms: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (plan and demand dumped with pydantic)."""
        return {
            "time_s": self.time_s,
            "observed_rps": dict(self.observed_rps),
            "forecast_rps": dict(self.forecast_rps),
            "forecast_lower_rps": dict(self.forecast_lower_rps),
            "forecast_upper_rps": dict(self.forecast_upper_rps),
            "horizon_s": self.horizon_s,
            "backlog_rps": dict(self.backlog_rps),
            "demand": self.demand.model_dump(),
            "plan": self.plan.model_dump(mode="json"),
            "changed": self.changed,
            "replicas_changed": self.replicas_changed,
            "reason": self.reason,
            "outcome": self.outcome,
            "alarms": list(self.alarms),
        }


class Controller:
    """The pure decision step of the control loop.

    Args:
        forecaster: an ``oserve.forecast`` forecaster (``fit(ts, rates)``, ``update(ts, rates)``,
            ``predict(horizon_s) -> Forecast``). The controller owns its learned state: pass a
            fresh instance per controller.
        planner: an ``oserve.policies`` planner (``plan(cluster, table, demand, current) -> Plan``).
        cluster: the cluster to plan on.
        table: the profile table.
        scheme: the request-class scheme; its class names order the per-class arrays.
        horizon_s: how far ahead to forecast, seconds (> 0). Typically the time a switch takes
            plus one control interval.
        min_history: observations needed before the forecaster is fitted (>= 1); until then the
            observed rate is the forecast.
        pinned: a plan that overrides the planner until :meth:`unpin` (admin pin).
        floor_at_observed: plan for ``max(forecast, observed)`` per class (see module docstring).
        history_len: decisions kept in :attr:`history` (oldest dropped first).
        switch_lead_s: the expected switch time, seconds (>= 0); the forecast horizon is at least
            this. None: the largest ``start_time_s`` of the table's variants.
        slo_ttft_s: the TTFT SLO the backlog must meet, seconds; None: the table's.
        backlog: add the waiting requests' demand (see the module docstring).
        backlog_min_age_fraction / backlog_min_drain_s: see :mod:`oserve.control.backlog`.

        scale_down_window_s: the demand handed to the planner is, per class, the largest demand of
            the ticks of the last ``scale_down_window_s`` seconds (>= 0; 0: this tick's only). More
            demand is planned for at once; less only once it has lasted that long, so noise around
            a replica's capacity does not stop and restart replicas (the Kubernetes HPA's
            scale-down stabilisation window, there 300 s). At zero demand the deployment reaches
            its minimum within ``scale_down_window_s / interval + 1`` ticks after the forecast falls.
        min_replicas: a planned plan keeps at least this many of the current replicas
            (:func:`oserve.control.guards.floor_replicas`; >= 0). Default 1: at zero demand the
            deployment scales down to one replica, which the next request finds.

    Safety rule (not for a pinned plan): a class with demand that the table gives no capacity for
    raises an alarm (log warning, :attr:`Decision.alarms`) and a plan that would remove running
    replicas is not applied (:func:`oserve.control.guards.keep_running_capacity`).

    Raises:
        ControllerInputError: ``horizon_s`` <= 0, ``min_history`` < 1, ``history_len`` < 1,
            ``switch_lead_s`` < 0, ``min_replicas`` < 0 or ``scale_down_window_s`` < 0.
        ConfigError: a backlog parameter out of range (names the field).
    """

    def __init__(
        self,
        forecaster: _ForecasterLike,
        planner: _PlannerLike,
        cluster: ClusterSpec,
        table: ProfileTable,
        scheme: ClassScheme,
        *,
        horizon_s: float = 60.0,
        min_history: int = 6,
        pinned: Plan | None = None,
        floor_at_observed: bool = True,
        history_len: int = 256,
        switch_lead_s: float | None = None,
        slo_ttft_s: float | None = None,
        backlog: bool = True,
        backlog_min_age_fraction: float = 0.5,
        backlog_min_drain_s: float = 10.0,
        min_replicas: int = 1,
        scale_down_window_s: float = 0.0,
    ) -> None:
        if not horizon_s > 0:
            raise ControllerInputError(f"horizon_s must be > 0, got {horizon_s}", field="horizon_s", allowed="> 0")
        if min_history < 1:
            raise ControllerInputError(
                f"min_history must be >= 1, got {min_history}", field="min_history", allowed=">= 1"
            )
        if history_len < 1:
            raise ControllerInputError(
                f"history_len must be >= 1, got {history_len}", field="history_len", allowed=">= 1"
            )
        if switch_lead_s is None:
            switch_lead_s = max((v.start_time_s for v in table.variants.values()), default=0.0)
        if not (switch_lead_s >= 0 and np.isfinite(switch_lead_s)):
            raise ControllerInputError(f"switch_lead_s must be >= 0, got {switch_lead_s}", field="switch_lead_s",
                                       allowed=">= 0 seconds")
        check_backlog_params(backlog_min_age_fraction, backlog_min_drain_s)
        self.switch_lead_s = float(switch_lead_s)
        self.slo_ttft_s = float(slo_ttft_s if slo_ttft_s is not None else table.slo.ttft_s)
        self.backlog = bool(backlog)
        self.backlog_min_age_fraction = float(backlog_min_age_fraction)
        self.backlog_min_drain_s = float(backlog_min_drain_s)
        if min_replicas < 0:
            raise ControllerInputError(
                f"min_replicas must be >= 0, got {min_replicas}", field="min_replicas", allowed=">= 0"
            )
        if not scale_down_window_s >= 0:
            raise ControllerInputError(f"scale_down_window_s must be >= 0, got {scale_down_window_s}",
                                       field="scale_down_window_s", allowed=">= 0 seconds")
        self.min_replicas = int(min_replicas)
        self.scale_down_window_s = float(scale_down_window_s)
        self._recent: deque[tuple[float, dict[str, float]]] = deque()
        self.forecaster = forecaster
        self.planner = planner
        self.cluster = cluster
        self.table = table
        self.scheme = scheme
        self.horizon_s = float(horizon_s)
        self.min_history = int(min_history)
        self.floor_at_observed = bool(floor_at_observed)
        self._pinned = pinned
        self._history: deque[Decision] = deque(maxlen=int(history_len))
        self._fitted = False
        self._last_ts: float | None = None

    # ----------------------------------------------------------------- pinning
    @property
    def pinned(self) -> Plan | None:
        """The admin-pinned plan, or None."""
        return self._pinned

    def pin(self, plan: Plan) -> None:
        """Override the planner with ``plan`` from the next tick on. Side effects: sets :attr:`pinned`."""
        self._pinned = plan

    def unpin(self) -> None:
        """Give control back to the planner from the next tick on."""
        self._pinned = None

    # ----------------------------------------------------------------- history
    @property
    def history(self) -> list[Decision]:
        """Decisions made so far, oldest first (bounded by ``history_len``)."""
        return list(self._history)

    def record_outcome(self, decision: Decision, outcome: str) -> Decision:
        """Attach what happened when ``decision`` was applied; returns the updated decision.

        The decision is matched by identity in :attr:`history`; if it has already been dropped
        from the bounded history, only the returned copy carries the outcome.
        """
        updated = replace(decision, outcome=outcome)
        for i, d in enumerate(self._history):
            if d is decision:
                self._history[i] = updated
                break
        return updated

    # ----------------------------------------------------------------- the tick
    def tick(
        self,
        now_s: float,
        snapshot: _SnapshotLike,
        history_ts: np.ndarray,
        history_rates: np.ndarray,
        current: Plan | None,
        *,
        note: str = "",
    ) -> Decision:
        """Make one control decision.

        Args:
            now_s: the caller's time, seconds (recorded only; the controller reads no clock).
            snapshot: the monitor's snapshot; ``class_names`` (k,) and ``arrival_rates_rps`` (k,)
                are used.
            history_ts: observation timestamps, seconds, shape ``(n,)``, non-decreasing.
            history_rates: per-class arrival rates, req/s, shape ``(n, k)``, k = classes of
                ``scheme``, in its order.
            current: the plan deployed now (None before anything runs).
            note: why this decision is made now (e.g. a surge check); prefixed to the reason.

        Returns:
            The decision (also appended to :attr:`history`).

        Raises:
            ControllerInputError: arrays of the wrong shape, negative or non-finite rates, or a
                snapshot whose classes differ from the scheme.
            PlanningError: the planner failed and there is no current plan to keep.

        Side effects: the forecaster is fitted on the first tick with at least ``min_history``
        observations and updated afterwards with the observations newer than the last one seen.
        """
        names = list(self.scheme.names)
        k = len(names)
        observed = self._observed(snapshot, names)
        ts, rates = self._check_history(history_ts, history_rates, k)

        forecast_rps, lower, upper, f_note = self._forecast(ts, rates, observed, names)
        if self.floor_at_observed:
            demand_rates = {c: max(forecast_rps[c], observed[c]) for c in names}
        else:
            demand_rates = dict(forecast_rps)
        demand_rates = self._window_max(float(now_s), demand_rates)
        backlog = self._backlog(snapshot, names)  # after the window: waiting work is served, not remembered
        for c, extra in backlog.items():
            demand_rates[c] += extra
        demand = Demand(rates_rps=demand_rates, min_quality=self.scheme.min_quality_by_class)

        if self._pinned is not None:
            plan = self._pinned
            reason = "pinned by admin"
        else:
            try:
                plan = self.planner.plan(self.cluster, self.table, demand, current)
                reason = plan.reason or "planner"
            except PlanningError as exc:
                if current is None:
                    raise
                log.warning("planner failed, keeping the current plan: %s", exc)
                plan = current
                reason = f"planner failed, current plan kept: {exc}"
        alarms: tuple[str, ...] = ()
        if self._pinned is None:
            missing = missing_classes(self.table, demand)
            if missing:
                alarms = tuple(f"missing-class: {c} ({why})" for c, why in missing.items())
                log.warning("missing-class alarm: demand for %s that the profile table gives no capacity for; "
                            "running capacity is never removed while it lasts", ", ".join(missing))
                plan = keep_running_capacity(plan, current, missing)
                reason = plan.reason or reason
            floored = floor_replicas(plan, current, self.table, self.min_replicas)
            if floored is not plan:
                plan, reason = floored, floored.reason
        if f_note:
            reason = f"{reason}; {f_note}"
        if note:
            reason = f"{note}. {reason}"
        decision = Decision(
            time_s=float(now_s),
            observed_rps=observed,
            forecast_rps=forecast_rps,
            forecast_lower_rps=lower,
            forecast_upper_rps=upper,
            horizon_s=self.effective_horizon_s,
            backlog_rps=backlog,
            demand=demand,
            plan=plan,
            changed=not plans_equal(plan, current),
            reason=reason,
            replicas_changed=placement_counts(plan) != placement_counts(current),
            alarms=alarms,
        )
        self._history.append(decision)
        return decision

    # ----------------------------------------------------------------- helpers
    @property
    def effective_horizon_s(self) -> float:
        """The forecast horizon used, seconds: ``max(horizon_s, switch_lead_s)``."""
        return max(self.horizon_s, self.switch_lead_s)

    def _backlog(self, snapshot: _SnapshotLike, names: list[str]) -> dict[str, float]:
        """Extra req/s per class of the snapshot's waiting requests (empty when off or not reported)."""
        waiting = getattr(snapshot, "waiting", None)
        oldest = getattr(snapshot, "oldest_wait_s", None)
        if not self.backlog or waiting is None or oldest is None:
            return {}
        w = np.asarray(waiting, dtype=float).reshape(-1)
        a = np.asarray(oldest, dtype=float).reshape(-1)
        if w.shape != (len(names),) or a.shape != (len(names),):
            return {}  # a snapshot without backlog fields (size 0): nothing waiting is known
        if not (np.all(np.isfinite(w)) and np.all(w >= 0) and np.all(np.isfinite(a)) and np.all(a >= 0)):
            raise ControllerInputError(
                f"snapshot backlog must be finite and >= 0, got waiting={w.tolist()} oldest_wait_s={a.tolist()}",
                field="snapshot.waiting", allowed="finite values >= 0")
        out = {}
        for c, n, age in zip(names, w, a, strict=True):
            extra = backlog_rps(int(n), float(age), self.slo_ttft_s, min_age_fraction=self.backlog_min_age_fraction,
                                min_drain_s=self.backlog_min_drain_s)
            if extra > 0:
                out[c] = extra
        return out

    def _window_max(self, now_s: float, rates: dict[str, float]) -> dict[str, float]:
        """Per class, the largest demand of the ticks within ``scale_down_window_s`` (this one included)."""
        self._recent.append((now_s, dict(rates)))
        while self._recent and self._recent[0][0] < now_s - self.scale_down_window_s - 1e-9:
            self._recent.popleft()
        return {c: max(r.get(c, 0.0) for _, r in self._recent) for c in rates}

    def _observed(self, snapshot: _SnapshotLike, names: list[str]) -> dict[str, float]:
        snap_names = list(snapshot.class_names)
        if snap_names != names:
            raise ControllerInputError(
                f"snapshot classes {snap_names} differ from the scheme's {names}",
                field="snapshot.class_names", allowed=str(names),
            )
        arr = np.asarray(snapshot.arrival_rates_rps, dtype=float).reshape(-1)
        if arr.shape != (len(names),) or not np.all(np.isfinite(arr)) or np.any(arr < 0):
            raise ControllerInputError(
                f"snapshot arrival rates must be {len(names)} finite values >= 0, got {arr.tolist()}",
                field="snapshot.arrival_rates_rps", allowed=f"shape ({len(names)},), finite, >= 0",
            )
        return {c: float(v) for c, v in zip(names, arr, strict=True)}

    @staticmethod
    def _check_history(history_ts: np.ndarray, history_rates: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        ts = np.asarray(history_ts, dtype=float)
        rates = np.asarray(history_rates, dtype=float)
        if ts.ndim != 1:
            raise ControllerInputError(f"history_ts must be 1-D, got shape {ts.shape}", field="history_ts",
                                       allowed="shape (n,)")
        if rates.size == 0 and ts.size == 0:
            return ts, rates.reshape(0, k)
        if rates.shape != (ts.shape[0], k):
            raise ControllerInputError(
                f"history_rates must have shape ({ts.shape[0]}, {k}), got {rates.shape}",
                field="history_rates", allowed=f"shape (n, {k})",
            )
        if ts.size > 1 and np.any(np.diff(ts) < 0):
            raise ControllerInputError("history_ts must be non-decreasing", field="history_ts",
                                       allowed="non-decreasing seconds")
        if not np.all(np.isfinite(rates)) or np.any(rates < 0):
            raise ControllerInputError("history_rates must be finite and >= 0", field="history_rates",
                                       allowed="finite req/s >= 0")
        return ts, rates

    def _forecast(
        self, ts: np.ndarray, rates: np.ndarray, observed: dict[str, float], names: list[str]
    ) -> tuple[dict[str, float], dict[str, float], dict[str, float], str]:
        """Fit/update the forecaster and predict; falls back to the observed rates (noted)."""
        if not self._fitted:
            if ts.shape[0] < self.min_history:
                return dict(observed), {}, {}, f"forecaster warming up ({ts.shape[0]}/{self.min_history} observations)"
            try:
                self.forecaster.fit(ts, rates)
            except (OserveError, ValueError, ArithmeticError, np.linalg.LinAlgError) as exc:
                log.warning("forecaster fit failed, planning on observed rates: %s", exc)
                return dict(observed), {}, {}, f"forecaster fit failed ({exc}); observed rates used"
            self._fitted = True
            self._last_ts = float(ts[-1])
        else:
            assert self._last_ts is not None
            new = ts > self._last_ts
            if np.any(new):
                try:
                    self.forecaster.update(ts[new], rates[new])
                except (OserveError, ValueError, ArithmeticError, np.linalg.LinAlgError) as exc:
                    log.warning("forecaster update failed, planning on observed rates: %s", exc)
                    return dict(observed), {}, {}, f"forecaster update failed ({exc}); observed rates used"
                self._last_ts = float(ts[new][-1])
        try:
            fc = self.forecaster.predict(self.effective_horizon_s)
        except (OserveError, ValueError, ArithmeticError, np.linalg.LinAlgError) as exc:
            log.warning("forecast failed, planning on observed rates: %s", exc)
            return dict(observed), {}, {}, f"forecast failed ({exc}); observed rates used"
        point = np.asarray(fc.rates_rps, dtype=float).reshape(-1)
        lo = np.asarray(fc.lower_rps, dtype=float).reshape(-1)
        hi = np.asarray(fc.upper_rps, dtype=float).reshape(-1)
        if point.shape != (len(names),) or not np.all(np.isfinite(point)):
            return dict(observed), {}, {}, f"forecast had shape {point.shape} or non-finite values; observed used"
        point = np.maximum(point, 0.0)

        def to_d(a: np.ndarray) -> dict[str, float]:
            if a.shape != point.shape:
                return {}
            return {c: float(max(v, 0.0)) for c, v in zip(names, a, strict=True)}

        return {c: float(v) for c, v in zip(names, point, strict=True)}, to_d(lo), to_d(hi), ""


def same_replicas(a: Plan | None, b: Plan | None) -> bool:
    """True when two plans deploy the same replica counts per (variant, node) (routing may differ)."""
    return placement_counts(a) == placement_counts(b)
