"""Request classes: buckets over (input tokens, output tokens), the spatial axis of a workload.

The default scheme splits input at 2,048 tokens and output at 256 tokens, giving four classes
(``short-in/short-out``, ``short-in/long-out``, ``long-in/short-out``, ``long-in/long-out``). On the
Azure LLM inference 2023 traces this separates the code service (prefill heavy, p50 output 13
tokens) from the conversation service (p50 output 129 tokens).

At admission a request is classified by its prompt's token count and by ``max_tokens``; when a
request gives no ``max_tokens``, the expected output of the class its input falls into is used
(``expected_output_tokens`` of the short-output class of that input row).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

import numpy as np

from oserve.errors import ConfigError

__all__ = ["RequestClass", "ClassScheme", "DEFAULT_SCHEME"]


@dataclass(frozen=True)
class RequestClass:
    """One bucket of requests.

    Attributes:
        name: stable identifier, e.g. ``"short-in/short-out"``.
        index: position in the scheme (row/column index of per-class arrays).
        input_range: ``[lo, hi)`` input tokens.
        output_range: ``[lo, hi)`` output tokens.
        expected_input_tokens: representative input length (tokens) used by profiles/planners.
        expected_output_tokens: representative output length (tokens).
        min_quality: lowest quality score (0-1, :mod:`oserve.profiles.quality`) of a variant that may
            serve this class; 0 means any variant.
    """

    name: str
    index: int
    input_range: tuple[int, int]
    output_range: tuple[int, int]
    expected_input_tokens: int
    expected_output_tokens: int
    min_quality: float = 0.0


@dataclass(frozen=True)
class ClassScheme:
    """A grid of request classes defined by input and output token edges.

    Args:
        input_edges: increasing interior edges over input tokens, e.g. ``(2048,)``.
        output_edges: increasing interior edges over output tokens, e.g. ``(256,)``.
        input_names / output_names: labels per bucket (len(edges) + 1 each).
        expected_input_tokens / expected_output_tokens: representative lengths per bucket.
        min_quality: ``(class name, minimum quality score 0-1)`` pairs; classes not named accept any
            variant.

    Raises:
        ConfigError: edges not strictly increasing or not positive, label counts off, or a
            ``min_quality`` entry naming an unknown class or outside 0-1.
    """

    input_edges: tuple[int, ...] = (2048,)
    output_edges: tuple[int, ...] = (256,)
    input_names: tuple[str, ...] = ("short-in", "long-in")
    output_names: tuple[str, ...] = ("short-out", "long-out")
    expected_input_tokens: tuple[int, ...] = (1024, 4096)
    expected_output_tokens: tuple[int, ...] = (64, 512)
    min_quality: tuple[tuple[str, float], ...] = ()
    classes: tuple[RequestClass, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        for axis, edges, names, expected in (
            ("input", self.input_edges, self.input_names, self.expected_input_tokens),
            ("output", self.output_edges, self.output_names, self.expected_output_tokens),
        ):
            if any(e <= 0 for e in edges) or any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
                raise ConfigError(
                    f"{axis}_edges must be positive and strictly increasing, got {list(edges)}",
                    field=f"{axis}_edges", allowed="strictly increasing positive integers",
                )
            if len(names) != len(edges) + 1 or len(expected) != len(edges) + 1:
                raise ConfigError(
                    f"{axis}_names and expected_{axis}_tokens need {len(edges) + 1} entries",
                    field=f"{axis}_names", allowed=f"exactly {len(edges) + 1} entries",
                )
        names = [f"{i}/{o}" for i in self.input_names for o in self.output_names]
        min_q: dict[str, float] = {}
        for name, q in self.min_quality:
            if name not in names:
                raise ConfigError(f"min_quality names unknown class {name!r}", field=f"min_quality.{name}",
                                  allowed=", ".join(names))
            if not 0.0 <= float(q) <= 1.0:
                raise ConfigError(f"min_quality of {name!r} must be within 0-1, got {q}",
                                  field=f"min_quality.{name}", allowed="0 <= min_quality <= 1")
            min_q[name] = float(q)
        inf = 2**62
        in_b = [0, *self.input_edges, inf]
        out_b = [0, *self.output_edges, inf]
        classes = []
        for i, iname in enumerate(self.input_names):
            for j, oname in enumerate(self.output_names):
                classes.append(
                    RequestClass(
                        name=f"{iname}/{oname}",
                        index=len(classes),
                        input_range=(in_b[i], in_b[i + 1]),
                        output_range=(out_b[j], out_b[j + 1]),
                        expected_input_tokens=self.expected_input_tokens[i],
                        expected_output_tokens=self.expected_output_tokens[j],
                        min_quality=min_q.get(f"{iname}/{oname}", 0.0),
                    )
                )
        object.__setattr__(self, "classes", tuple(classes))

    @property
    def names(self) -> list[str]:
        """Class names in index order."""
        return [c.name for c in self.classes]

    @property
    def min_quality_by_class(self) -> dict[str, float]:
        """Per class name, its minimum quality score (only classes that set one): what a planner's
        ``Demand.min_quality`` takes."""
        return {c.name: c.min_quality for c in self.classes if c.min_quality > 0}

    def __len__(self) -> int:
        return len(self.classes)

    def by_name(self, name: str) -> RequestClass:
        """Return the class called ``name``. Raises ConfigError naming the known classes."""
        for c in self.classes:
            if c.name == name:
                return c
        raise ConfigError(f"unknown request class {name!r}", field="class", allowed=", ".join(self.names))

    def classify(self, input_tokens: int, output_tokens: int | None = None) -> RequestClass:
        """Classify one request.

        Args:
            input_tokens: prompt tokens (>= 0).
            output_tokens: ``max_tokens`` of the request, or None when absent: then the input
                row's first output bucket's expected length is used.
        """
        i = bisect.bisect_right(self.input_edges, max(0, int(input_tokens)))
        if output_tokens is None:
            output_tokens = self.expected_output_tokens[0]
        j = bisect.bisect_right(self.output_edges, max(0, int(output_tokens)))
        return self.classes[i * (len(self.output_edges) + 1) + j]

    def classify_many(self, input_tokens: np.ndarray, output_tokens: np.ndarray) -> np.ndarray:
        """Vectorised :meth:`classify`: arrays of shape ``(n,)`` -> class indices ``(n,)``."""
        i = np.searchsorted(np.asarray(self.input_edges), np.asarray(input_tokens), side="right")
        j = np.searchsorted(np.asarray(self.output_edges), np.asarray(output_tokens), side="right")
        return (i * (len(self.output_edges) + 1) + j).astype(np.int64)


DEFAULT_SCHEME = ClassScheme()
