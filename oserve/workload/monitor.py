"""The live workload monitor: per-second, per-class request statistics over sliding windows.

The endpoint calls :meth:`WorkloadMonitor.record_admission` when it admits a request,
:meth:`~WorkloadMonitor.record_first_token` when the first output token leaves and
:meth:`~WorkloadMonitor.record_completion` when the request ends (successfully or not). The
orchestrator polls the backends and passes each replica's stats to
:meth:`~WorkloadMonitor.update_replica_stats`. Forecasters and planners read
:meth:`~WorkloadMonitor.snapshot` and :meth:`~WorkloadMonitor.rate_history`.

Semantics (each one is a unit test):

- Arrivals are counted at admission, never at completion, so demand stays visible when the
  replicas are saturated.
- A stretch with no traffic reads as zero demand (rate 0), not as missing data.
- A replica whose stats could not be read this cycle (``stats=None``) is *unknown* (``None`` in
  the snapshot, NaN in Prometheus), never idle.
- A cumulative counter that goes down (a restarted replica) is a reset: its rate over that cycle
  is the new value divided by the interval (as Prometheus' ``rate()`` treats resets), never
  negative.

Storage is a ring of ``history_s`` one-second bins per class, so recording is O(1) and costs a
few microseconds (``bench/monitor_overhead.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge

from oserve.backends.base import ReplicaStats
from oserve.clock import Clock
from oserve.errors import ConfigError
from oserve.types import ClassScheme, RequestClass

__all__ = ["WorkloadMonitor", "WorkloadSnapshot"]


@dataclass(frozen=True)
class WorkloadSnapshot:
    """Per-class workload over the last window, for forecasters and planners.

    Attributes:
        time_s: clock time of the snapshot, seconds.
        window_s: length of the window the rates and means cover, seconds (shorter than
            configured while the monitor is younger than one window).
        class_names: request class names; index ``j`` of every ``(k,)`` array is class ``j``.
        arrival_rates_rps: admissions per second, shape ``(k,)``; zero when there was no traffic.
        mean_input_tokens: mean prompt tokens of requests admitted in the window, ``(k,)``; NaN
            when the class had no admission in the window.
        mean_output_tokens: mean output tokens of requests completed in the window, ``(k,)``;
            when none completed, the mean ``max_tokens`` of those admitted; NaN when neither.
        in_flight: requests admitted and not yet completed, ``(k,)``.
        mean_ttft_s: mean time from admission to first token of the requests whose first token
            came in the window (the endpoint's TTFT, an upper bound on queueing), ``(k,)``; NaN when
            none.
        replicas: latest stats per replica id; ``None`` = unknown this cycle (not idle).
        completion_rates_rps: completions per second (ok or not), ``(k,)``.
        failure_rates_rps: failed completions per second, ``(k,)``.
        replica_counter_rates: per replica id, per counter name, increase per second over the last
            poll interval (resets handled, never negative).
        waiting: backlog per class, ``(k,)``: requests admitted that have no first token yet (waiting
            in the router-side queue, in an engine's queue, or in prefill).
        oldest_wait_s: per class, ``(k,)``: how long the oldest of ``waiting`` has waited, seconds
            (0 when none waits).
    """

    time_s: float
    window_s: float
    class_names: tuple[str, ...]
    arrival_rates_rps: np.ndarray
    mean_input_tokens: np.ndarray
    mean_output_tokens: np.ndarray
    in_flight: np.ndarray
    mean_ttft_s: np.ndarray
    replicas: dict[str, ReplicaStats | None]
    completion_rates_rps: np.ndarray = field(default_factory=lambda: np.zeros(0))
    failure_rates_rps: np.ndarray = field(default_factory=lambda: np.zeros(0))
    replica_counter_rates: dict[str, dict[str, float]] = field(default_factory=dict)
    waiting: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    oldest_wait_s: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def rates_by_class(self) -> dict[str, float]:
        """Arrival rates as ``{class name: req/s}`` (the shape of ``oserve.types.Demand``)."""
        return {n: float(r) for n, r in zip(self.class_names, self.arrival_rates_rps, strict=True)}


# indices of the per-bin, per-class accumulators
_ARR, _IN, _MAXTOK, _DONE, _OUT, _FAIL, _FT, _QSUM = range(8)
_N_ACC = 8


class WorkloadMonitor:
    """Sliding-window, per-class request statistics plus per-replica stats.

    Args:
        scheme: the request classes.
        clock: time source (``WallClock`` live, ``SimClock`` in the simulator and tests).
        window_s: window of :meth:`snapshot`'s rates and means, seconds (whole seconds, >= 1).
        history_s: how long per-second bins are kept for :meth:`rate_history`, seconds
            (>= ``window_s``).
        registry: Prometheus registry for the metrics; a fresh ``CollectorRegistry`` when None
            (so several monitors never collide on the global registry).
        namespace: Prometheus metric name prefix.

    Raises:
        ConfigError: ``window_s < 1`` or ``history_s < window_s``.
    """

    def __init__(
        self,
        scheme: ClassScheme,
        clock: Clock,
        window_s: float = 10.0,
        history_s: float = 600.0,
        registry: CollectorRegistry | None = None,
        namespace: str = "oserve",
    ) -> None:
        if not (math.isfinite(window_s) and window_s >= 1):
            raise ConfigError(f"window_s must be >= 1 s, got {window_s}", field="window_s", allowed=">= 1 seconds")
        if not (math.isfinite(history_s) and history_s >= window_s):
            raise ConfigError(f"history_s must be >= window_s ({window_s}), got {history_s}", field="history_s",
                              allowed=f">= {window_s} seconds")
        self.scheme = scheme
        self.clock = clock
        self.window_s = float(window_s)
        self.history_s = float(history_s)
        self._k = len(scheme)
        self._class_index = {c.name: c.index for c in scheme.classes}
        self._w = int(round(window_s))
        self._h = int(math.ceil(history_s)) + 1  # +1: the current, partial second
        self._start_sec = math.floor(clock.now())
        self._cur_sec = self._start_sec
        # _bins[b][acc][class]
        self._bins: list[list[list[float]]] = [self._zero_bin() for _ in range(self._h)]
        self._in_flight = [0] * self._k
        # request id -> [class index, admission time, first-token time or None]
        self._requests: dict[str, list] = {}
        self._replicas: dict[str, ReplicaStats | None] = {}
        self._counters: dict[str, tuple[float, dict[str, float]]] = {}
        self._counter_rates: dict[str, dict[str, float]] = {}

        self.registry = registry if registry is not None else CollectorRegistry()
        names = scheme.names
        admitted = Counter("requests_admitted", "Requests admitted, by request class", ["request_class"],
                           namespace=namespace, registry=self.registry)
        in_flight = Gauge("requests_in_flight", "Requests admitted and not completed, by request class",
                          ["request_class"], namespace=namespace, registry=self.registry)
        self._g_rate = Gauge("arrival_rate_rps", "Admissions per second over the monitor window, by request class",
                             ["request_class"], namespace=namespace, registry=self.registry)
        self._g_running = Gauge("replica_running", "Requests running on a replica (NaN = unknown)", ["replica"],
                                namespace=namespace, registry=self.registry)
        self._g_waiting = Gauge("replica_waiting", "Requests waiting on a replica (NaN = unknown)", ["replica"],
                                namespace=namespace, registry=self.registry)
        self._g_kv = Gauge("replica_kv_cache_usage", "KV-cache usage of a replica, 0..1 (NaN = unknown)", ["replica"],
                           namespace=namespace, registry=self.registry)
        self._g_backlog = Gauge("requests_waiting", "Requests admitted without a first token yet, by request class",
                                ["request_class"], namespace=namespace, registry=self.registry)
        self._g_oldest = Gauge("request_oldest_wait_seconds", "Wait so far of the oldest request without a first "
                               "token, by request class, s", ["request_class"], namespace=namespace,
                               registry=self.registry)
        self._g_known = Gauge("replica_stats_known", "1 if the replica's stats were read this cycle, else 0",
                              ["replica"], namespace=namespace, registry=self.registry)
        # pre-bound children: labels() lookups are too slow for the request path
        self._c_admitted = [admitted.labels(n) for n in names]
        self._g_in_flight = [in_flight.labels(n) for n in names]

    # ------------------------------------------------------------------ bins
    def _zero_bin(self) -> list[list[float]]:
        return [[0.0] * self._k for _ in range(_N_ACC)]

    def _bin(self, now: float) -> list[list[float]]:
        """The accumulator of the second holding ``now``, zeroing bins skipped since the last call."""
        sec = math.floor(now)
        if sec > self._cur_sec:
            for s in range(max(self._cur_sec + 1, sec - self._h + 1), sec + 1):
                self._bins[s % self._h] = self._zero_bin()
            self._cur_sec = sec
        elif sec < self._cur_sec - self._h + 1:  # older than the history: goes to the oldest kept bin
            sec = self._cur_sec - self._h + 1
        return self._bins[sec % self._h]

    # ------------------------------------------------------------ recording
    def record_admission(self, request_id: str, request_class: RequestClass | str, input_tokens: int,
                         max_tokens: int | None) -> None:
        """Count one admitted request (its arrival) in its class.

        Args:
            request_id: unique id, used by the later calls.
            request_class: the class it was classified into at admission (or its name).
            input_tokens: prompt tokens.
            max_tokens: requested output limit (tokens); None = the class's expected output tokens.

        Raises:
            ConfigError: a class name the scheme does not know.
        """
        now = self.clock.now()
        if isinstance(request_class, RequestClass):
            j = request_class.index
        else:
            j = self._class_index.get(request_class, -1)
            if j < 0:
                raise ConfigError(f"unknown request class {request_class!r}", field="request_class",
                                  allowed=", ".join(self.scheme.names))
        if max_tokens is None:
            max_tokens = self.scheme.classes[j].expected_output_tokens
        b = self._bin(now)
        b[_ARR][j] += 1
        b[_IN][j] += input_tokens
        b[_MAXTOK][j] += max_tokens
        self._in_flight[j] += 1
        self._requests[request_id] = [j, now, None]
        self._c_admitted[j].inc()
        self._g_in_flight[j].inc()

    def record_first_token(self, request_id: str) -> None:
        """Note the first output token of an admitted request (unknown ids are ignored)."""
        req = self._requests.get(request_id)
        if req is None or req[2] is not None:
            return
        now = self.clock.now()
        req[2] = now
        b = self._bin(now)
        b[_FT][req[0]] += 1
        b[_QSUM][req[0]] += now - req[1]

    def record_completion(self, request_id: str, output_tokens: int, ok: bool) -> None:
        """Note the end of an admitted request (unknown ids are ignored).

        Args:
            request_id: the id given at admission.
            output_tokens: tokens actually generated.
            ok: False for a failed or aborted request.
        """
        req = self._requests.pop(request_id, None)
        if req is None:
            return
        j = req[0]
        b = self._bin(self.clock.now())
        b[_DONE][j] += 1
        b[_OUT][j] += output_tokens
        self._in_flight[j] -= 1
        self._g_in_flight[j].dec()
        if not ok:
            b[_FAIL][j] += 1

    def update_replica_stats(self, replica_id: str, stats: ReplicaStats | None,
                             counters: dict[str, float] | None = None) -> None:
        """Store a replica's polled stats and cumulative counters.

        Args:
            replica_id: the replica.
            stats: its stats, or None when they could not be read this cycle (then the replica is
                unknown, not idle).
            counters: cumulative counters read from the replica (e.g. generated tokens total), or
                None when unread. Their per-second increase since the previous reading is kept;
                a counter lower than before is a reset (the increase is the new value).
        """
        self._replicas[replica_id] = stats
        nan = float("nan")
        if stats is None:
            self._g_known.labels(replica_id).set(0)
            for g in (self._g_running, self._g_waiting, self._g_kv):
                g.labels(replica_id).set(nan)
        else:
            self._g_known.labels(replica_id).set(1)
            for g, v in ((self._g_running, stats.running), (self._g_waiting, stats.waiting),
                         (self._g_kv, stats.kv_cache_usage)):
                g.labels(replica_id).set(nan if v is None else float(v))
        if counters is None:
            self._counter_rates.pop(replica_id, None)
            return
        now = self.clock.now()
        prev = self._counters.get(replica_id)
        rates: dict[str, float] = {}
        if prev is not None and now > prev[0]:
            dt = now - prev[0]
            for name, value in counters.items():
                if name not in prev[1]:
                    continue
                old = prev[1][name]
                inc = value - old if value >= old else value  # decrease = counter reset
                rates[name] = max(0.0, inc) / dt
        self._counters[replica_id] = (now, dict(counters))
        self._counter_rates[replica_id] = rates

    def forget_replica(self, replica_id: str) -> None:
        """Drop a replica that was removed from the deployment (not merely unreadable)."""
        self._replicas.pop(replica_id, None)
        self._counters.pop(replica_id, None)
        self._counter_rates.pop(replica_id, None)
        for g in (self._g_running, self._g_waiting, self._g_kv, self._g_known):
            try:
                g.remove(replica_id)
            except KeyError:
                pass

    # --------------------------------------------------------------- reading
    def _window_sums(self, now: float) -> tuple[np.ndarray, float]:
        """Sum the accumulators over the last complete seconds of the window: ``(acc, k)``, length."""
        self._bin(now)
        cur = self._cur_sec
        n = min(self._w, cur - self._start_sec)
        sums = np.zeros((_N_ACC, self._k))
        for s in range(cur - n, cur):
            sums += np.asarray(self._bins[s % self._h])
        return sums, float(n)

    def snapshot(self) -> WorkloadSnapshot:
        """Per-class rates and means over the last ``window_s`` complete seconds.

        The window covers the whole seconds ``[floor(now) - window_s, floor(now))`` (the current
        partial second is excluded, so a snapshot lags by under one second). While the monitor is
        younger than one window, the rates divide by the seconds it has seen. Also updates the
        ``arrival_rate_rps`` Prometheus gauge.
        """
        now = self.clock.now()
        sums, n = self._window_sums(now)
        length = max(n, 1.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            rates = sums[_ARR] / length
            mean_in = np.where(sums[_ARR] > 0, sums[_IN] / sums[_ARR], np.nan)
            mean_out = np.where(sums[_DONE] > 0, sums[_OUT] / sums[_DONE],
                                np.where(sums[_ARR] > 0, sums[_MAXTOK] / sums[_ARR], np.nan))
            queue = np.where(sums[_FT] > 0, sums[_QSUM] / sums[_FT], np.nan)
        for j, g in enumerate(self._g_rate_children()):
            g.set(float(rates[j]))
        waiting, oldest = self.backlog(now)
        for j, cname in enumerate(self.scheme.names):
            self._g_backlog.labels(cname).set(float(waiting[j]))
            self._g_oldest.labels(cname).set(float(oldest[j]))
        return WorkloadSnapshot(
            time_s=now,
            window_s=n,
            class_names=tuple(self.scheme.names),
            arrival_rates_rps=rates,
            mean_input_tokens=mean_in,
            mean_output_tokens=mean_out,
            in_flight=np.asarray(self._in_flight, dtype=np.int64),
            mean_ttft_s=queue,
            replicas=dict(self._replicas),
            completion_rates_rps=sums[_DONE] / length,
            failure_rates_rps=sums[_FAIL] / length,
            replica_counter_rates={r: dict(v) for r, v in self._counter_rates.items()},
            waiting=waiting,
            oldest_wait_s=oldest,
        )

    def backlog(self, now: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Requests admitted without a first token yet, per class, and the oldest one's wait.

        Args:
            now: the time to measure waits at, seconds (None: the clock's now).

        Returns:
            ``(waiting (k,) requests, oldest_wait_s (k,) seconds)``; O(requests in flight).
        """
        now = self.clock.now() if now is None else now
        waiting = np.zeros(self._k, dtype=np.int64)
        oldest = np.zeros(self._k)
        for j, admitted, first in self._requests.values():
            if first is None:
                waiting[j] += 1
                oldest[j] = max(oldest[j], now - admitted)
        return waiting, oldest

    def _g_rate_children(self) -> list:
        return [self._g_rate.labels(n) for n in self.scheme.names]

    def rate_history(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-second admissions for forecasters.

        Returns:
            ``(timestamps_s, rates_rps)``: ``timestamps_s`` shape ``(n,)``, the start of each
            complete second since the monitor started (at most ``history_s`` of them);
            ``rates_rps`` shape ``(n, k)``, admissions in that second (req/s). Seconds without
            traffic are 0; seconds before the monitor started are absent (not zero).
        """
        self._bin(self.clock.now())
        cur = self._cur_sec
        n = min(self._h - 1, cur - self._start_sec)
        secs = np.arange(cur - n, cur, dtype=np.int64)
        rates = np.zeros((n, self._k))
        for i, s in enumerate(secs):
            rates[i] = self._bins[s % self._h][_ARR]
        return secs.astype(np.float64), rates

    @property
    def in_flight(self) -> np.ndarray:
        """Requests admitted and not completed per class, shape ``(k,)``."""
        return np.asarray(self._in_flight, dtype=np.int64)
