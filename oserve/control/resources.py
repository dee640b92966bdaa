"""The resource model of a switch: memory (and CPU cores) a set of replica placements needs.

Memory is the hard limit. On GPU nodes each device's memory is checked (a replica of a variant uses
``memory_per_device_bytes`` on each of its devices). On CPU nodes memory is one pool per node
(``devices * device_memory_bytes``) and cores may be shared by an old and a new replica for the short
overlap of a switch.

Parked replicas (started, warm, no traffic; :attr:`oserve.types.Plan.parked`) hold memory but no
compute: on a CPU node their memory stays in the pool and they hold no core (an active replica
may use the same cores); on a GPU node they are asleep (vLLM sleep level 1: weights in host
memory, KV cache freed) and hold no device memory (host memory is not accounted).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from oserve.errors import ConfigError
from oserve.profiles.table import ProfileTable
from oserve.types import ClusterSpec, ReplicaPlacement

__all__ = ["ResourceModel"]

_MemKey = tuple[str, int | None]  # (node, device) on GPU nodes; (node, None) for a CPU node's pool

class ResourceModel:
    """Memory accounting of a cluster for a set of replica placements.

    Args:
        cluster: the nodes.
        table: the profile table (``memory_per_device_bytes`` and ``devices_per_replica`` per variant).
        pooled_nodes: names of nodes whose memory is one pool; default: the nodes whose
            ``device_type`` is ``"cpu"``.
        share_cpu_cores: on pooled (CPU) nodes, let an old and a new replica use the same cores for
            the overlap of a switch (memory stays the hard limit). False makes cores exclusive, so
            a switch that needs a busy core rolls instead (use it with a backend that refuses
            shared cores, e.g. ``VLLMBackend(allow_core_sharing=False)``).

    Raises (from the methods):
        ConfigError: a placement names an unknown node, a device id out of range, or a variant the
            table lacks.
    """

    def __init__(self, cluster: ClusterSpec, table: ProfileTable, *, pooled_nodes: Iterable[str] | None = None,
                 share_cpu_cores: bool = True) -> None:
        self.cluster = cluster
        self.share_cpu_cores = bool(share_cpu_cores)
        self._pooled_given = None if pooled_nodes is None else frozenset(pooled_nodes)
        self.table = table
        self._nodes = {n.name: n for n in cluster.nodes}
        self._pooled = (
            set(pooled_nodes) if pooled_nodes is not None
            else {n.name for n in cluster.nodes if n.device_type.lower() == "cpu"}
        )

    def with_cluster(self, cluster: ClusterSpec) -> ResourceModel:
        """The same accounting on another cluster (after nodes joined or left); same table and knobs."""
        return ResourceModel(cluster, self.table, pooled_nodes=self._pooled_given, share_cpu_cores=self.share_cpu_cores)

    def nodes(self) -> frozenset[str]:
        """Names of the cluster's nodes."""
        return frozenset(self._nodes)

    def pooled(self, node: str) -> bool:
        """True when ``node``'s memory is one pool and its cores may be shared briefly."""
        return node in self._pooled

    def check(self, p: ReplicaPlacement, *, field: str = "plan.replicas") -> None:
        """Validate a placement against the cluster and table. Raises ConfigError naming the field.

        ``field``: the path of the placement's list in error messages (``plan.replicas`` or
        ``plan.parked``).
        """
        node = self._nodes.get(p.node)
        if node is None:
            raise ConfigError(f"placement on unknown node {p.node!r}", field=f"{field}.node",
                              allowed=", ".join(sorted(self._nodes)))
        if p.variant not in self.table.variants:
            raise ConfigError(f"placement of unknown variant {p.variant!r}", field=f"{field}.variant",
                              allowed=", ".join(sorted(self.table.variants)))
        bad = [d for d in p.device_ids if not 0 <= d < node.devices]
        if bad:
            raise ConfigError(f"device ids {bad} out of range on node {p.node!r}", field=f"{field}.device_ids",
                              allowed=f"0..{node.devices - 1}")

    def need(self, p: ReplicaPlacement) -> dict[_MemKey, int]:
        """Memory one replica needs, bytes, per memory key."""
        self.check(p)
        v = self.table.variants[p.variant]
        if self.pooled(p.node):
            return {(p.node, None): v.memory_per_device_bytes * max(v.devices_per_replica, len(p.device_ids), 1)}
        return {(p.node, d): v.memory_per_device_bytes for d in p.device_ids}

    def need_parked(self, p: ReplicaPlacement) -> dict[_MemKey, int]:
        """Memory one parked replica holds, bytes, per key: its full need on a pooled (CPU) node,
        nothing on a GPU node (asleep: weights in host memory)."""
        return self.need(p) if self.pooled(p.node) else {}

    def capacity(self, key: _MemKey) -> int:
        """Memory available under a key, bytes."""
        node = self._nodes[key[0]]
        return node.device_memory_bytes * (node.devices if key[1] is None else 1)

    def usage(self, placements: Iterable[ReplicaPlacement], parked: Iterable[ReplicaPlacement] = ()) -> Counter[_MemKey]:
        """Memory used by active ``placements`` and ``parked`` replicas, bytes, per key."""
        out: Counter[_MemKey] = Counter()
        for p in placements:
            out.update(self.need(p))
        for p in parked:
            out.update(self.need_parked(p))
        return out

    def fits(self, placements: Iterable[ReplicaPlacement], new: ReplicaPlacement,
             parked: Iterable[ReplicaPlacement] = (), *, new_parked: bool = False) -> bool:
        """True when ``new`` fits in memory beside active ``placements`` and ``parked`` replicas.

        ``new_parked``: ``new`` is to be parked (it holds no core and, on GPU, no device memory).
        Parked replicas never hold cores.
        """
        placements = list(placements)
        used = self.usage(placements, parked)
        need = self.need_parked(new) if new_parked else self.need(new)
        if not all(used[k] + b <= self.capacity(k) for k, b in need.items()):
            return False
        if new_parked:
            return True
        if self.pooled(new.node) and not self.share_cpu_cores:
            busy = {d for p in placements if p.node == new.node for d in p.device_ids}
            return not busy & set(new.device_ids)
        return True
