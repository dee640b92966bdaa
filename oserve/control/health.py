"""Replica health judged by progress: a pure tracker fed by the request path and the health loop.

An engine can report itself healthy while making no progress: vLLM 0.32's ``check_health`` only
reads an error flag, so an engine-core process that is stopped (``SIGSTOP``) or wedged stays
"ready" while its requests hang; and an engine may accept requests and fail every one. The
:class:`ProgressTracker` judges a replica by what it does instead:

- **stalled**: the replica has requests in flight and none of them advanced (was admitted, got a
  token or finished) for ``stall_timeout_s`` seconds;
- **failing**: ``max_consecutive_failures`` requests in a row failed on the replica (replica-side
  failures only; a request the engine refused as invalid is a success of the engine).

The tracker reads no clock and does no I/O: callers pass ``now`` (seconds on one monotonic clock).
The orchestrator feeds it through :class:`~oserve.control.tracked_backend.TrackedReplica` proxies (every
request to its replicas, whoever sends it) and asks :meth:`ProgressTracker.verdict` in every health
check; a replica with a verdict is taken out of the
candidate set and replaced, and its requests without a first token are retried elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from oserve.errors import ConfigError

__all__ = ["HealthPolicy", "ProgressTracker"]


@dataclass(frozen=True)
class HealthPolicy:
    """Bounds of the progress judgement.

    Attributes:
        stall_timeout_s: a replica with requests in flight and no progress for this long is stalled, s
            (> 0). Default 20 s: above a 2k-token prefill of a small model on one CPU core (~5 s),
            far below a client's usual 60 s timeout.
        max_consecutive_failures: this many replica-side request failures in a row mark the replica
            failing (>= 1).
    """

    stall_timeout_s: float = 20.0
    max_consecutive_failures: int = 3

    def __post_init__(self) -> None:
        if not self.stall_timeout_s > 0:
            raise ConfigError(f"stall_timeout_s must be > 0 s, got {self.stall_timeout_s}",
                              field="health.stall_timeout_s", allowed="> 0 seconds")
        if self.max_consecutive_failures < 1:
            raise ConfigError(f"max_consecutive_failures must be >= 1, got {self.max_consecutive_failures}",
                              field="health.max_consecutive_failures", allowed=">= 1")


@dataclass
class _ReplicaProgress:
    in_flight: dict[str, float] = field(default_factory=dict)  # request id -> admitted at, s
    last_progress_s: float | None = None
    consecutive_failures: int = 0
    last_failure: str = ""


class ProgressTracker:
    """Per-replica request progress and failure streaks (pure; see the module docstring).

    Args:
        policy: the bounds (defaults of :class:`HealthPolicy`).
    """

    def __init__(self, policy: HealthPolicy | None = None) -> None:
        self.policy = policy or HealthPolicy()
        self._replicas: dict[str, _ReplicaProgress] = {}

    def _get(self, replica_id: str) -> _ReplicaProgress:
        return self._replicas.setdefault(replica_id, _ReplicaProgress())

    def started(self, replica_id: str, request_id: str, now: float) -> None:
        """A request was sent to the replica at ``now`` (s). Side effects: counts it in flight."""
        p = self._get(replica_id)
        if not p.in_flight:
            p.last_progress_s = now  # an idle replica's stall clock starts with its first request
        p.in_flight[request_id] = now

    def advanced(self, replica_id: str, request_id: str, now: float) -> None:
        """The request got output (a token) at ``now`` (s). Unknown (forgotten) replicas are ignored."""
        p = self._replicas.get(replica_id)
        if p is not None:
            p.last_progress_s = now

    def finished(self, replica_id: str, request_id: str, now: float, *, failed: bool, reason: str = "") -> None:
        """The request ended at ``now`` (s); ``failed`` when the replica failed it (not a client error).

        Side effects: a success resets the failure streak, a failure extends it. Unknown (forgotten)
        replicas are ignored.
        """
        p = self._replicas.get(replica_id)
        if p is None:
            return
        p.in_flight.pop(request_id, None)
        p.last_progress_s = now
        if failed:
            p.consecutive_failures += 1
            p.last_failure = reason
        else:
            p.consecutive_failures = 0
            p.last_failure = ""

    def verdict(self, replica_id: str, now: float) -> str | None:
        """Why the replica should be taken out at ``now`` (s), or None while it makes progress."""
        p = self._replicas.get(replica_id)
        if p is None:
            return None
        limit = self.policy.max_consecutive_failures
        if p.consecutive_failures >= limit:
            last = f" (last: {p.last_failure})" if p.last_failure else ""
            return f"{p.consecutive_failures} requests in a row failed{last}"
        if p.in_flight and p.last_progress_s is not None:
            idle = now - p.last_progress_s
            if idle >= self.policy.stall_timeout_s:
                return (f"no progress for {idle:.1f} s with {len(p.in_flight)} request(s) in flight "
                        f"(bound {self.policy.stall_timeout_s:g} s)")
        return None

    def in_flight(self, replica_id: str) -> int:
        """Requests in flight on the replica."""
        p = self._replicas.get(replica_id)
        return 0 if p is None else len(p.in_flight)

    def forget(self, replica_id: str) -> None:
        """Drop the replica's record (it was taken out or stopped)."""
        self._replicas.pop(replica_id, None)
