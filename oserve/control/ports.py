"""The router as the switcher sees it: the port the live router and the simulator's router both provide."""

from __future__ import annotations

from typing import Protocol

from oserve.backends.base import Replica, ReplicaState

__all__ = ["RouterPort"]


class RouterPort(Protocol):
    """What the switcher needs from the router (``oserve.server.router.Router`` provides it)."""

    def add(self, replica: Replica) -> None: ...

    def remove(self, replica_id: str) -> None: ...

    def set_state(self, replica_id: str, state: ReplicaState) -> None: ...

    def set_routing(self, routing: dict[str, dict[str, float]]) -> None: ...
