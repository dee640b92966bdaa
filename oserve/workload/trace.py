"""The normalised trace: one row per request, arrival times in seconds from the first request."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Trace"]


@dataclass(frozen=True)
class Trace:
    """A request trace in oserve's normalised form. All arrays have shape ``(n,)``.

    Attributes:
        arrival_s: arrival time in seconds from the first request (sorted, float64).
        input_tokens: prompt tokens per request (int64, >= 0).
        output_tokens: output tokens per request (int64, >= 0).
        source: optional source tag per request (e.g. ``"code"``, ``"conv"``), dtype object/str.
        failed: True for rows the source marks as failed (BurstGPT: zero response tokens).
        name: a label for reports.
    """

    arrival_s: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    source: np.ndarray | None = None
    failed: np.ndarray | None = None
    name: str = "trace"
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.arrival_s.shape[0])

    @property
    def duration_s(self) -> float:
        """Time from the first to the last arrival, seconds (0 for one request)."""
        return float(self.arrival_s[-1] - self.arrival_s[0]) if len(self) else 0.0
