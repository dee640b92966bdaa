"""Per-variant iteration-time model shared by the profiler, the roofline model and the simulator.

prefill_s(tokens)          = a + b * tokens + c * tokens**2
decode_step_s(batch, kv)   = d + e * batch + f * kv_tokens

A mixed iteration (chunked prefill alongside decodes, as vLLM schedules) costs
``decode_step_s(batch, kv) + b * prefill_tokens + c * prefill_tokens**2`` (the fixed overhead
``a`` is paid once per iteration, inside ``d``). Coefficients come from a least-squares fit of
measured timings (profiler) or from the roofline model (hardware not present).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["IterationTimeModel"]


class IterationTimeModel(BaseModel):
    """Iteration time of one replica, seconds. Coefficients are non-negative."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    a: float = Field(0.0, ge=0, description="prefill fixed cost, s")
    b: float = Field(..., ge=0, description="prefill cost per prompt token, s/token")
    c: float = Field(0.0, ge=0, description="prefill quadratic (attention) cost, s/token^2")
    d: float = Field(..., ge=0, description="decode step fixed cost, s")
    e: float = Field(0.0, ge=0, description="decode step cost per sequence in the batch, s/seq")
    f: float = Field(0.0, ge=0, description="decode step cost per KV-cache token read, s/token")
    fit_error: float | None = Field(None, description="median relative error of the fit, fraction")

    def prefill_s(self, tokens: float) -> float:
        """Time to prefill ``tokens`` prompt tokens alone, seconds."""
        return self.a + self.b * tokens + self.c * tokens * tokens

    def decode_step_s(self, batch: int, kv_tokens: float) -> float:
        """Time of one decode step for ``batch`` sequences holding ``kv_tokens`` KV tokens, seconds."""
        if batch <= 0:
            return 0.0
        return self.d + self.e * batch + self.f * kv_tokens

    def mixed_step_s(self, batch: int, kv_tokens: float, prefill_tokens: float) -> float:
        """Time of an iteration with ``batch`` decodes and ``prefill_tokens`` chunked-prefill tokens."""
        base = self.decode_step_s(batch, kv_tokens) if batch > 0 else self.a + self.d
        return base + self.b * prefill_tokens + self.c * prefill_tokens * prefill_tokens
