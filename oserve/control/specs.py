"""Replica specs: what to start for a plan's replica placement.

A :data:`SpecFactory` maps a :class:`~oserve.types.ReplicaPlacement` and a new replica id to
the :class:`~oserve.backends.base.ReplicaSpec` the backend starts; :func:`spec_factory_from_templates`
builds the usual one from per-variant templates.
"""

from __future__ import annotations

from collections.abc import Callable

from oserve.backends.base import ReplicaSpec
from oserve.errors import ConfigError
from oserve.types import ClusterSpec, ReplicaPlacement

__all__ = ["SpecFactory", "spec_factory_from_templates"]

SpecFactory = Callable[[ReplicaPlacement, str], ReplicaSpec]
"""Maps a plan's replica placement and a new replica id to the :class:`ReplicaSpec` to start."""



def spec_factory_from_templates(templates: dict[str, ReplicaSpec], cluster: ClusterSpec) -> SpecFactory:
    """A :data:`SpecFactory` that copies a per-variant template and sets where the replica runs.

    Args:
        templates: variant name -> the :class:`ReplicaSpec` to start for it (model path, dtype,
            TP/PP, max_num_seqs, ...); its ``cpu_cores`` / ``devices`` are replaced per replica.
        cluster: the nodes; on a node whose ``device_type`` is ``"cpu"`` the placement's device ids
            become ``cpu_cores``, otherwise ``devices`` (GPU ids).

    Returns:
        ``factory(placement, replica_id) -> ReplicaSpec``.

    Raises (when called):
        ConfigError: no template for the placement's variant, or an unknown node.
    """
    kinds = {n.name: n.device_type.lower() for n in cluster.nodes}

    def factory(placement: ReplicaPlacement, replica_id: str) -> ReplicaSpec:
        tpl = templates.get(placement.variant)
        if tpl is None:
            raise ConfigError(f"no replica template for variant {placement.variant!r}", field="variants",
                              allowed=", ".join(sorted(templates)))
        if placement.node not in kinds:
            raise ConfigError(f"unknown node {placement.node!r}", field="plan.replicas.node",
                              allowed=", ".join(sorted(kinds)))
        ids = tuple(placement.device_ids)
        if kinds[placement.node] == "cpu":
            return tpl.model_copy(update={"variant": placement.variant, "cpu_cores": ids, "node": placement.node})
        return tpl.model_copy(update={"variant": placement.variant, "devices": ids, "node": placement.node})

    return factory
