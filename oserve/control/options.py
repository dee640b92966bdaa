"""The orchestrator's knobs (:class:`OrchestratorOptions`), apart from the loop that reads them."""

from __future__ import annotations

from dataclasses import dataclass

from oserve.control.health import HealthPolicy
from oserve.control.surge import SurgeRule
from oserve.errors import ConfigError

__all__ = ["OrchestratorOptions"]


@dataclass(frozen=True)
class OrchestratorOptions:
    """Knobs of the control wing, seconds unless named otherwise.

    The loop's own knobs (read by :class:`Orchestrator`):

    Attributes:
        control_interval_s: seconds between decisions (> 0).
        history_bin_s: the monitor's per-second rate history is averaged into bins this wide before
            it reaches the forecaster (:func:`oserve.control.controller.bin_history`, as the
            simulator does); 1 keeps per-second observations (> 0).
        health_interval_s: seconds between health checks of ready replicas (> 0).
        health_timeout_s: a replica whose ``health()`` takes longer is hung (treated as dead) (> 0).
        drain_timeout_s: how long in-flight requests may finish on a draining replica (>= 0).
        start_backoff_s: after a replica of a variant failed to start (or warm up) on a node, plans
            that would start that variant on that node again are not submitted for this long; the
            current deployment stays (>= 0; 0 retries at once). :meth:`Orchestrator.pin` clears it.

    The parts' knobs (read by :meth:`Orchestrator.build` when it builds them):

    Attributes:
        horizon_s: forecast horizon (> 0; :class:`~oserve.control.controller.Controller`).
        min_history: history bins before the forecaster is fitted (``Controller``).
        history_len: decisions kept in :attr:`Orchestrator.history` (``Controller``).
        scale_down_window_s: less demand is planned for only once it lasted this long (``Controller``).
        warmup_requests: real requests sent to each new replica before it gets traffic (``Switcher``).
        health_policy: bounds of the progress judgement (:mod:`oserve.control.health`): a replica
            whose requests make no progress, or that fails several requests in a row, is taken out.
        start_timeout_s: how long an engine may take to start (``Switcher``).
        share_cpu_cores: let old and new replicas share CPU cores during a switch
            (:class:`~oserve.control.resources.ResourceModel`).
        surge: surge checks between control ticks (:mod:`oserve.control.surge`); None: off.
        migrate_on_drain: a switch's drains abort in-flight requests at once and the endpoint resumes
            them on other replicas (``Switcher``; :mod:`oserve.server.resume`).
        migration_grace_s: with ``migrate_on_drain``, how long a drain lets in-flight requests finish in
            place before the rest are handed over (>= 0 s; 0: all at once).

    Raises:
        ConfigError: an interval or timeout out of range (naming the field).
    """

    control_interval_s: float = 10.0
    history_bin_s: float = 1.0
    health_interval_s: float = 2.0
    health_timeout_s: float = 15.0
    drain_timeout_s: float = 30.0
    start_backoff_s: float = 300.0
    horizon_s: float = 60.0
    min_history: int = 6
    history_len: int = 256
    scale_down_window_s: float = 0.0
    warmup_requests: int = 2
    health_policy: HealthPolicy | None = None
    start_timeout_s: float = 600.0
    share_cpu_cores: bool = True
    surge: SurgeRule | None = None
    migrate_on_drain: bool = False
    migration_grace_s: float = 0.0

    def __post_init__(self) -> None:
        for name in ("control_interval_s", "health_interval_s", "health_timeout_s", "history_bin_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}", field=name,
                                  allowed="> 0 seconds")
        for name in ("drain_timeout_s", "start_backoff_s", "migration_grace_s"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}", field=name,
                                  allowed=">= 0 seconds")
