"""The cluster the planner sees, read from a Ray cluster's nodes and resources.

Each alive Ray node that offers devices becomes one :class:`~oserve.types.NodeSpec`:

- name: the node label ``oserve-node`` (``ray start --labels='{"oserve-node": "gpu-a"}'``), else
  ``<hostname>-<first 8 hex digits of the Ray node id>`` (stable while the node lives).
- device type: the label ``oserve-device-type``, else the GPU's Ray accelerator type resource
  (``accelerator_type:H100`` -> ``"h100"``), else ``"gpu"`` on a node with GPUs, else ``"cpu"``.
- devices: the node's ``GPU`` resource; on a CPU node the cores listed in the label
  ``oserve-cpu-cores`` (``"0-3"``, ``"4"``: for several Ray nodes sharing one machine), else its
  ``CPU`` resource.
- memory per device: the label ``oserve-device-memory-bytes``, else on a CPU node the node's Ray
  ``memory`` resource divided by its cores; a GPU node needs the label (Ray does not report GPU memory)
  or the caller's ``default_gpu_memory_bytes``.

Nodes without devices (a head node started with ``--num-cpus=0``) are left out, so they never
receive replicas. :func:`cluster_from_ray_nodes` is pure (it takes ``ray.nodes()``'s list);
:class:`RayClusterWatcher` is the effectful edge that polls Ray and reports joins and leaves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from oserve.errors import ConfigError
from oserve.types import ClusterSpec, NodeSpec

__all__ = [
    "NODE_LABEL",
    "DEVICE_TYPE_LABEL",
    "CPU_CORES_LABEL",
    "DEVICE_MEMORY_LABEL",
    "RayNode",
    "ClusterChange",
    "parse_cores",
    "ray_node",
    "cluster_from_ray_nodes",
    "RayClusterWatcher",
]

NODE_LABEL = "oserve-node"
DEVICE_TYPE_LABEL = "oserve-device-type"
CPU_CORES_LABEL = "oserve-cpu-cores"
DEVICE_MEMORY_LABEL = "oserve-device-memory-bytes"


@dataclass(frozen=True)
class RayNode:
    """One Ray node as oserve uses it.

    Attributes:
        spec: what the planner sees.
        node_id: Ray's hex node id (placement groups are pinned to it).
        address: the node manager's IP address.
        cpu_cores: physical core ids behind device ids ``0..n-1`` on a CPU node (from the
            ``oserve-cpu-cores`` label), or None (device id = core id).
    """

    spec: NodeSpec
    node_id: str
    address: str
    cpu_cores: tuple[int, ...] | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    def physical_cores(self, device_ids: tuple[int, ...]) -> tuple[int, ...]:
        """Map the plan's device ids on this node to the core ids to pin an engine to.

        Raises:
            ConfigError: a device id is outside ``0..devices-1``.
        """
        bad = [d for d in device_ids if not 0 <= d < self.spec.devices]
        if bad:
            raise ConfigError(f"device ids {bad} out of range on Ray node {self.name!r}",
                              field="plan.replicas.device_ids", allowed=f"0..{self.spec.devices - 1}")
        if self.cpu_cores is None:
            return tuple(device_ids)
        return tuple(self.cpu_cores[d] for d in device_ids)


@dataclass(frozen=True)
class ClusterChange:
    """What one :meth:`RayClusterWatcher.refresh` found.

    Attributes:
        cluster: the nodes now.
        joined: names of nodes that appeared since the previous refresh.
        left: names of nodes that disappeared (dead or removed) since the previous refresh.
    """

    cluster: ClusterSpec
    joined: tuple[str, ...] = ()
    left: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        return bool(self.joined or self.left)


def parse_cores(text: str) -> tuple[int, ...]:
    """Parse a core list label: ``"3"``, ``"0-3"``, or ranges joined by ``_`` (``"0-1_4-5"``).

    (Ray label values allow only letters, digits, ``-``, ``_`` and ``.``, so no commas.)

    Raises:
        ConfigError: malformed text, a reversed range or a repeated core.
    """
    cores: list[int] = []
    try:
        for part in text.strip().split("_"):
            lo, _, hi = part.partition("-")
            a, b = int(lo), int(hi or lo)
            if b < a or a < 0:
                raise ValueError(part)
            cores.extend(range(a, b + 1))
    except ValueError as exc:
        raise ConfigError(f"bad core list {text!r} in label {CPU_CORES_LABEL!r}", field=CPU_CORES_LABEL,
                          allowed="'N', 'A-B' or ranges joined by '_', e.g. '0-3_8-11'") from exc
    if len(set(cores)) != len(cores):
        raise ConfigError(f"repeated core in label {CPU_CORES_LABEL!r}: {text!r}", field=CPU_CORES_LABEL,
                          allowed="each core once")
    return tuple(cores)


def _device_type(resources: dict[str, float], labels: dict[str, str], gpus: int) -> str:
    if labels.get(DEVICE_TYPE_LABEL):
        return labels[DEVICE_TYPE_LABEL].lower()
    if gpus <= 0:
        return "cpu"
    acc = [k.split(":", 1)[1] for k in resources if k.startswith("accelerator_type:")]
    return acc[0].lower() if acc else "gpu"


def ray_node(info: dict[str, Any], *, default_gpu_memory_bytes: int | None = None) -> RayNode | None:
    """Convert one entry of ``ray.nodes()`` (alive or not); None for a node without devices.

    Args:
        info: the entry (keys ``NodeID``, ``NodeManagerAddress``, ``NodeManagerHostname``,
            ``Resources``, ``Labels``).
        default_gpu_memory_bytes: memory per GPU when the node has no ``oserve-device-memory-bytes`` label.

    Raises:
        ConfigError: a malformed label, or a GPU node whose GPU memory is unknown.
    """
    resources: dict[str, float] = dict(info.get("Resources") or {})
    labels: dict[str, str] = dict(info.get("Labels") or {})
    node_id = str(info["NodeID"])
    name = labels.get(NODE_LABEL) or f"{info.get('NodeManagerHostname') or 'node'}-{node_id[:8]}"
    gpus = int(resources.get("GPU", 0))
    cores: tuple[int, ...] | None = None
    if gpus > 0:
        devices = gpus
    elif labels.get(CPU_CORES_LABEL):
        cores = parse_cores(labels[CPU_CORES_LABEL])
        devices = len(cores)
    else:
        devices = int(resources.get("CPU", 0))
    if devices <= 0:
        return None
    if labels.get(DEVICE_MEMORY_LABEL):
        try:
            mem = int(labels[DEVICE_MEMORY_LABEL])
        except ValueError as exc:
            raise ConfigError(f"node {name!r}: label {DEVICE_MEMORY_LABEL!r} is not an integer",
                              field=DEVICE_MEMORY_LABEL, allowed="bytes per device, > 0") from exc
    elif gpus > 0:
        if default_gpu_memory_bytes is None:
            raise ConfigError(f"node {name!r}: GPU memory unknown; label the node with {DEVICE_MEMORY_LABEL!r} "
                              "or pass default_gpu_memory_bytes", field=DEVICE_MEMORY_LABEL,
                              allowed="bytes per GPU, > 0")
        mem = int(default_gpu_memory_bytes)
    else:
        mem = int(resources.get("memory", 0) // devices)
    if mem <= 0:
        raise ConfigError(f"node {name!r}: memory per device must be > 0, got {mem}", field=DEVICE_MEMORY_LABEL,
                          allowed="bytes per device, > 0")
    spec = NodeSpec(name=name, device_type=_device_type(resources, labels, gpus), devices=devices,
                    device_memory_bytes=mem)
    return RayNode(spec=spec, node_id=node_id, address=str(info.get("NodeManagerAddress", "")), cpu_cores=cores)


def cluster_from_ray_nodes(nodes: list[dict[str, Any]], *,
                           default_gpu_memory_bytes: int | None = None) -> dict[str, RayNode]:
    """The alive nodes with devices, by name, in Ray's order.

    Args:
        nodes: ``ray.nodes()``.
        default_gpu_memory_bytes: see :func:`ray_node`.

    Raises:
        ConfigError: two alive nodes with the same name, or a node :func:`ray_node` refuses.
    """
    out: dict[str, RayNode] = {}
    for info in nodes:
        if not info.get("Alive", info.get("alive", False)):
            continue
        node = ray_node(info, default_gpu_memory_bytes=default_gpu_memory_bytes)
        if node is None:
            continue
        if node.name in out:
            raise ConfigError(f"two Ray nodes are named {node.name!r}", field=NODE_LABEL,
                              allowed="a distinct oserve-node label per node")
        out[node.name] = node
    return out


@dataclass
class RayClusterWatcher:
    """Polls Ray for its nodes; the composition root calls :meth:`refresh` on its own schedule.

    Args:
        default_gpu_memory_bytes: see :func:`ray_node`.
        list_nodes: returns the node entries; None: ``ray.nodes()`` (a call to Ray's GCS; Ray must be
            initialised, which ``RayBackend.connect`` does).

    Side effects: only :meth:`refresh` reads the cluster.
    """

    default_gpu_memory_bytes: int | None = None
    list_nodes: Callable[[], list[dict[str, Any]]] | None = None
    nodes: dict[str, RayNode] = field(default_factory=dict)

    @property
    def cluster(self) -> ClusterSpec:
        """The nodes seen at the last refresh."""
        return ClusterSpec(nodes=[n.spec for n in self.nodes.values()])

    def refresh(self) -> ClusterChange:
        """Read the nodes now and report what joined or left since the last refresh.

        Raises:
            ConfigError: see :func:`cluster_from_ray_nodes`.
        """
        if self.list_nodes is None:
            import ray

            entries = ray.nodes()
        else:
            entries = self.list_nodes()
        now = cluster_from_ray_nodes(entries, default_gpu_memory_bytes=self.default_gpu_memory_bytes)
        before = self.nodes
        joined = tuple(n for n in now if n not in before or before[n].node_id != now[n].node_id)
        left = tuple(n for n in before if n not in now or before[n].node_id != now[n].node_id)
        self.nodes = now
        return ClusterChange(cluster=self.cluster, joined=joined, left=left)
