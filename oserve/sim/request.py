"""A simulated request and its per-request record."""

from __future__ import annotations

from typing import Any

__all__ = ["SimRequest", "RECORD_FIELDS"]

RECORD_FIELDS: tuple[str, ...] = (
    "rid", "arrival_s", "input_tokens", "output_tokens", "cls", "source", "replica", "variant",
    "first_token_s", "finish_s", "generated_tokens", "preemptions", "touched", "retried", "aborted", "refused",
)
"""Columns of the per-request records the simulator writes (``requests.csv``)."""


class SimRequest:
    """One request travelling through the simulator (mutable, slotted for speed).

    Token bookkeeping follows vLLM v1's scheduler: ``num_tokens`` is prompt plus generated tokens,
    ``computed`` how many of them have their KV cache computed; an iteration computes
    ``num_tokens - computed`` tokens (capped by the token budget) and, once ``computed`` reaches
    ``num_tokens``, samples one new output token. A preempted request (recompute) restarts from
    ``computed = 0`` and prefills prompt plus generated tokens again.

    Attributes:
        rid: request index in the trace.
        arrival_s: arrival time, seconds.
        input_tokens / output_tokens: prompt tokens, output tokens to generate (>= 1).
        cls: request-class index of the scheme.
        source: trace source tag (``""`` if none).
        first_token_s / finish_s: times of the first output token and of the last, seconds (None
            until they happen).
        generated: output tokens produced so far.
        preemptions: times the request was preempted (recompute) for lack of KV-cache blocks.
        blocks: KV-cache blocks held on its replica.
        replica / variant: where it was (last) served.
        touched: the request was affected by a switch: in flight on a replica when it started
            draining, held because no replica was ready, retried or aborted.
        retried / aborted / refused: outcome flags (refused: no replica could ever fit it).
    """

    __slots__ = (
        "rid", "arrival_s", "input_tokens", "output_tokens", "cls", "source", "num_tokens", "computed",
        "generated", "blocks", "first_token_s", "finish_s", "preemptions", "replica", "variant", "touched",
        "retried", "aborted", "refused",
    )

    def __init__(self, rid: int, arrival_s: float, input_tokens: int, output_tokens: int, cls: int = 0,
                 source: str = "") -> None:
        self.rid = rid
        self.arrival_s = arrival_s
        self.input_tokens = max(1, int(input_tokens))
        self.output_tokens = max(1, int(output_tokens))
        self.cls = cls
        self.source = source
        self.num_tokens = self.input_tokens
        self.computed = 0
        self.generated = 0
        self.blocks = 0
        self.first_token_s: float | None = None
        self.finish_s: float | None = None
        self.preemptions = 0
        self.replica = ""
        self.variant = ""
        self.touched = False
        self.retried = False
        self.aborted = False
        self.refused = False

    def record(self) -> dict[str, Any]:
        """The request's outcome as a flat dict with :data:`RECORD_FIELDS` keys."""
        return {
            "rid": self.rid, "arrival_s": self.arrival_s, "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens, "cls": self.cls, "source": self.source, "replica": self.replica,
            "variant": self.variant, "first_token_s": self.first_token_s, "finish_s": self.finish_s,
            "generated_tokens": self.generated, "preemptions": self.preemptions, "touched": self.touched,
            "retried": self.retried, "aborted": self.aborted, "refused": self.refused,
        }
