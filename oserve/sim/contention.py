"""CPU contention on a shared node: how much slower a replica's iterations run when the node's cores
are shared with other busy replicas and with the serving path (pure functions, no state).

The profile table's iteration models are measured one engine at a time on an otherwise idle machine
(``oserve profile``). On a CPU node the replicas (one core each) share the cores with processes the
table never saw: oserve's server and router, each engine's API front-end (detokenising and streaming)
and, in a benchmark, the load generator. Their CPU time grows with the stream of output tokens. While
some cores idle they absorb it; once every core runs an engine iteration, that CPU time is taken from
the engines. :class:`ContentionModel` turns this into a slowdown factor (>= 1) applied to each
iteration when it starts:

    host_cores = host_cpu_s_per_token * node output-token rate (tokens/s)        [cores]
    factor     = max(1, (busy_devices + host_cores) / node_devices)
                 * (1 + colocated_slowdown * other_busy_replicas)

Two serving-path costs the quiet, one-engine profile does not contain either, measured from the
requests of a real replay that were alone on the node (``bench/sim_fidelity_diagnosis.py``):

    iteration time = factor * (table iteration time + step_overhead_s)
    client-observed first token and finish = engine's + request_overhead_s

``step_overhead_s`` is host time each engine iteration costs on a shared node (output hand-off to the
front-end and the streaming path, paid even with one engine busy); ``request_overhead_s`` is the
per-request latency of the HTTP / tokenisation / routing / SSE path (it adds to TTFT and end-to-end
latency, not to TPOT, and takes no engine time).

``busy_devices`` counts the devices of replicas with an iteration in progress on the node, this one
included, and of replicas starting there (an engine loading weights and warming up keeps its cores
busy); ``colocated_slowdown`` is the extra iteration time per other busy replica (shared memory
bandwidth and caches). Both coefficients are fitted to real replays (``bench/sim_fidelity_loads.py``);
zero (the default for all four) disables the model and leaves the table's iteration times as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

from oserve.errors import ConfigError

__all__ = ["ContentionModel", "NO_CONTENTION"]


@dataclass(frozen=True)
class ContentionModel:
    """Coefficients of the node-sharing slowdown.

    Attributes:
        host_cpu_s_per_token: CPU seconds the serving path (server, router, engine front-ends,
            client) spends per streamed output token, s/token. 0 disables the host term.
        colocated_slowdown: extra iteration-time fraction per other busy replica on the node
            (dimensionless). 0 disables the co-location term.
        step_overhead_s: host time added to every engine iteration, s (before the factor).
        request_overhead_s: serving-path latency added to each request's client-observed first-token
            and finish times, s.
    """

    host_cpu_s_per_token: float = 0.0
    colocated_slowdown: float = 0.0
    step_overhead_s: float = 0.0
    request_overhead_s: float = 0.0

    def __post_init__(self) -> None:
        for name in ("host_cpu_s_per_token", "colocated_slowdown", "step_overhead_s", "request_overhead_s"):
            v = getattr(self, name)
            if not 0 <= v < float("inf"):
                raise ConfigError(f"{name} must be finite and >= 0, got {v}", field=name, allowed=">= 0, finite")

    @property
    def enabled(self) -> bool:
        """True when any coefficient is non-zero."""
        return (self.host_cpu_s_per_token > 0 or self.colocated_slowdown > 0 or self.step_overhead_s > 0
                or self.request_overhead_s > 0)

    def factor(self, *, busy_devices: int, node_devices: int, token_rate: float, other_busy: int) -> float:
        """Iteration-time multiplier (>= 1) for an iteration starting now.

        Args:
            busy_devices: devices of the node's replicas with an iteration in progress, this one included.
            node_devices: devices (cores) of the node.
            token_rate: output tokens per second the node's replicas are streaming, tokens/s.
            other_busy: other replicas on the node with an iteration in progress.

        Raises:
            ConfigError: ``node_devices`` < 1 or a negative count or rate.
        """
        if node_devices < 1:
            raise ConfigError(f"node_devices must be >= 1, got {node_devices}", field="node_devices", allowed=">= 1")
        if busy_devices < 0 or other_busy < 0 or not token_rate >= 0:
            raise ConfigError("busy_devices, other_busy and token_rate must be >= 0", field="token_rate",
                              allowed=">= 0")
        host = self.host_cpu_s_per_token * token_rate
        share = max(1.0, (busy_devices + host) / node_devices)
        return share * (1.0 + self.colocated_slowdown * other_busy)


NO_CONTENTION = ContentionModel()
"""The table's iteration times as measured (no slowdown)."""
