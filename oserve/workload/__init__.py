"""Workload: request classes, normalised traces, trace loaders/transforms/statistics, rate binning.

The replay client (:mod:`oserve.workload.replay`, needs httpx) is not imported here.
"""

from oserve.types import DEFAULT_SCHEME, ClassScheme, RequestClass
from oserve.workload.binning import rates_per_class
from oserve.workload.loaders import (
    TraceOrderWarning,
    load_azure,
    load_burstgpt,
    load_generic,
    load_mooncake,
    load_trace,
)
from oserve.workload.stats import trace_stats
from oserve.workload.trace import Trace
from oserve.workload.transforms import clip_tokens, compress, merge, scale_rate, scale_tokens, select, window

__all__ = [
    "DEFAULT_SCHEME",
    "ClassScheme",
    "RequestClass",
    "Trace",
    "TraceOrderWarning",
    "load_azure",
    "load_burstgpt",
    "load_generic",
    "load_mooncake",
    "load_trace",
    "rates_per_class",
    "trace_stats",
    "window",
    "merge",
    "compress",
    "scale_rate",
    "clip_tokens",
    "scale_tokens",
    "select",
]
