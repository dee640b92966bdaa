"""The switcher's park and wake steps: activating and deactivating parked (warm) replicas.

A parked replica is started and warm but gets no traffic (:attr:`oserve.types.Plan.parked`).

* Activation (:meth:`ParkingSteps._wake_one`): ``Replica.wake`` (vLLM sleep level 1 wake-up on GPU; on
  CPU the idle engine just takes requests again), then the router adds the replica as ``ready``; the
  routing shift follows with the phase's other starts. No cold start, no warm-up requests: the
  engine served before it was parked.
* Deactivation (:meth:`ParkingSteps._drain_park`): the router stops sending it requests, the
  in-flight ones finish (up to the drain timeout; the rest are aborted with an explicit error; with
  ``migrate_on_drain`` those still running after ``migration_grace_s`` (default 0: all at once) are
  aborted and the endpoint resumes them on other replicas; a switch that only restores quality waits
  for them instead, handing the rest over once a newer plan is pending), then ``Replica.park`` and the
  router forgets it. A replica whose backend cannot park
  (``ReplicaError`` code ``park_unsupported``) or whose park fails is stopped instead.

Both steps are recorded (kinds ``wake`` and ``park``) with their measured duration; they run on the
switcher's :class:`~oserve.clock.Clock`, so the simulator runs the same code on simulated time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from oserve.backends.base import Replica
    from oserve.clock import Clock
    from oserve.control.records import StepKind, StepRecord
    from oserve.control.switcher import ManagedReplica, RouterPort

__all__ = ["ParkingSteps"]

log = logging.getLogger(__name__)

#: how often a patient drain (a quality restore's) reads the replica's in-flight count, s
PATIENT_POLL_S = 0.1


class ParkingSteps:
    """Mixin of :class:`~oserve.control.switcher.Switcher`: the wake and park steps (see the module
    docstring). Uses the switcher's registry, router, clock and timeouts."""

    _replicas: dict[str, ManagedReplica]
    router: RouterPort
    clock: Clock
    drain_timeout_s: float
    start_timeout_s: float
    stop_timeout_s: float
    _aborted: int
    _migrated: int
    _steps: list[StepRecord]
    #: the running transition only restores quality (``Plan.quality_restore``) on a migrating switcher:
    #: its drains wait for in-flight requests to finish, and hand the rest over once a newer plan is pending
    _patient: bool = False
    _pending: object | None

    if TYPE_CHECKING:  # provided by the Switcher
        def _record(self, kind: StepKind, m: ManagedReplica, ok: bool, detail: str, t0: float) -> None: ...

        def _router_call(self, name: str, *args: object) -> None: ...

        def _refresh_routing(self, record: bool = False) -> bool: ...

        async def _stop_managed(self, m: ManagedReplica, rid: str) -> None: ...

        async def _discard(self, replica: Replica | None) -> None: ...

    async def _run_wakes(self, replica_ids: tuple[str, ...]) -> None:
        """Wake the parked replicas ``replica_ids`` concurrently (each step recorded)."""
        await asyncio.gather(*(self._wake_one(rid) for rid in replica_ids))

    async def _wake_one(self, rid: str) -> None:
        """Activate one parked replica: wake it, then add it to the router as ``ready``.

        A wake that fails or takes longer than ``start_timeout_s`` is recorded failed and the
        replica is stopped and forgotten (the next transition starts one cold). Never raises.
        """
        m = self._replicas.get(rid)
        if m is None or m.state != "parked" or m.replica is None:
            return
        t0 = self.clock.now()
        m.state = "starting"
        try:
            await self.clock.wait_for(m.replica.wake(), self.start_timeout_s or None)
        except asyncio.CancelledError:
            m.state = "parked"
            raise
        except Exception as exc:  # noqa: BLE001 - a failed wake is recorded; the replica is stopped
            m.state = "failed"
            self._record("wake", m, False, f"{type(exc).__name__}: {exc}", t0)
            log.warning("parked replica %s (%s on %s) failed to wake: %s", rid, m.placement.variant,
                        m.placement.node, exc)
            await self._discard(m.replica)
            self._replicas.pop(rid, None)
            return
        m.state = "ready"
        self.router.add(m.replica)
        self._router_call("set_state", rid, "ready")
        self._record("wake", m, True, "", t0)

    async def _drain_in_flight(self, m: ManagedReplica, timeout_s: float, t0: float, migrate: bool = False) -> None:
        """Drain ``m``'s in-flight requests (aborted after ``timeout_s``; with ``migrate`` the endpoint
        resumes the aborted ones elsewhere, so they are recorded as migrated); a failure is recorded, not raised."""
        assert m.replica is not None
        outstanding = getattr(self.router, "outstanding", None)
        if self._patient and not migrate and outstanding is not None:
            timeout_s, migrate = await self._wait_patiently(m, timeout_s, outstanding), True
        try:
            aborted = await self.clock.wait_for(m.replica.drain(timeout_s), timeout_s + self.stop_timeout_s)
            if migrate:  # the endpoint resumes them elsewhere
                self._migrated += int(aborted)
                self._record("drain", m, True, f"{aborted} requests migrated", t0)
                return
            self._aborted += int(aborted)
            self._record("drain", m, True, f"{aborted} requests aborted", t0)
        except Exception as exc:  # noqa: BLE001 - a failing drain is reported; the next step still runs
            self._record("drain", m, False, repr(exc), t0)

    async def _wait_patiently(self, m: ManagedReplica, timeout_s: float, outstanding: Callable[[str], int]) -> float:
        """Wait while ``m`` (already out of the routing) still has requests in flight, up to ``timeout_s``,
        and not once a newer plan is pending: a restore is not urgent, the next plan may be (a surge).

        Returns:
            The time left for the drain, s: 0 when a plan is pending (what is left is handed over at once).
        """
        deadline = self.clock.now() + timeout_s
        while self._pending is None and self.clock.now() < deadline:
            try:
                if outstanding(m.replica_id) <= 0:
                    break
            except KeyError:  # no longer in the router: nothing to wait for
                break
            await self.clock.sleep(PATIENT_POLL_S)
        return 0.0 if self._pending is not None else max(0.0, deadline - self.clock.now())

    async def _drain_park(self, rid: str, timeout_s: float, migrate: bool = False) -> None:
        """Deactivate one active replica: routing removal, drain in-flight requests, then park.

        Side effects: router ``set_state(draining)`` then ``remove``; ``drain`` and ``park`` steps
        recorded. A replica that cannot park is stopped (a ``stop`` step). Never raises.
        """
        m = self._replicas.get(rid)
        if m is None or m.replica is None or m.state not in ("ready", "draining"):
            return
        t0 = self.clock.now()
        m.state = "draining"
        self._router_call("set_state", rid, "draining")
        self._refresh_routing()
        await self._drain_in_flight(m, timeout_s, t0, migrate)
        t1 = self.clock.now()
        try:
            await self.clock.wait_for(m.replica.park(), self.stop_timeout_s)
        except Exception as exc:  # noqa: BLE001 - a replica that cannot park is stopped instead
            self._record("park", m, False, f"{type(exc).__name__}: {exc}; stopped instead", t1)
            await self._stop_managed(m, rid)
            return
        m.state = "parked"
        self._router_call("remove", rid)
        self._record("park", m, True, "", t1)

    async def _park_new(self, m: ManagedReplica, replica: Replica) -> None:
        """Park a replica right after its start and warm-up (planned parked): it never gets traffic.

        Raises:
            ReplicaError: the backend cannot park (the caller stops the replica).
        """
        t0 = self.clock.now()
        await self.clock.wait_for(replica.park(), self.stop_timeout_s)
        m.state = "parked"
        self._record("park", m, True, "parked after start", t0)
