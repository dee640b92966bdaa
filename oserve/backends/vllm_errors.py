"""How vLLM's exceptions and sampling parameters map to oserve's: engine refusals of a request become
:class:`~oserve.errors.InvalidRequestError` naming the parameter (what the endpoint answers with a 400).
"""

from __future__ import annotations

import re
from typing import Any

from oserve.backends.base import SamplingParams
from oserve.errors import InvalidRequestError


def is_client_error(exc: BaseException) -> bool:
    """True for vLLM's own request-validation errors (``VLLMClientError`` and subclasses)."""
    try:
        from vllm.exceptions import VLLMClientError
    except ImportError:  # older vLLM: no such class
        return False
    return isinstance(exc, VLLMClientError)


_PARAMS = ("temperature", "top_p", "top_k", "min_p", "presence_penalty", "frequency_penalty",
           "repetition_penalty", "max_tokens", "stop", "seed", "n", "logprobs", "logit_bias")
"""Request fields whose name leads vLLM's validation messages (``"top_k must be ..."``)."""


def refusal_types() -> tuple[type[BaseException], ...]:
    """Exception types vLLM raises for a request it refuses (``VLLMClientError``, ``ValueError``)."""
    try:
        from vllm.exceptions import VLLMClientError
    except ImportError:  # older vLLM: validation errors are plain ValueErrors
        return (ValueError,)
    return (VLLMClientError, ValueError)


def refusal(exc: BaseException, default_param: str | None) -> InvalidRequestError:
    """Translate a vLLM request-validation error into a 400 naming the parameter.

    vLLM's ``VLLMValidationError`` carries ``parameter`` for some checks only; for the others the
    message starts with the parameter's name (``"presence_penalty must be in [-2, 2], got 3.0."``),
    or names it after ``in`` (``"token_id(s) [99999] in logit_bias contain out-of-vocab ..."``).
    """
    text = str(exc)
    param = getattr(exc, "parameter", None)
    if param is None:
        m = re.match(r"^(\w+) (?:must|cannot)\b", text) or re.search(r"\bin (\w+) contain", text)
        if m is not None and m.group(1) in _PARAMS:
            param = m.group(1)
    return InvalidRequestError(f"the engine refused the request: {text}", param=param or default_param,
                               code="invalid_value")


def vllm_sampling_params(params: SamplingParams) -> Any:
    """vLLM's ``SamplingParams`` for ours; its constructor runs vLLM's own argument checks.

    Raises:
        vllm.exceptions.VLLMValidationError / ValueError: a value vLLM refuses.
    """
    from vllm import SamplingParams as VSamplingParams

    return VSamplingParams(
        max_tokens=params.max_tokens, temperature=params.temperature, top_p=params.top_p,
        top_k=params.top_k, min_p=params.min_p, presence_penalty=params.presence_penalty,
        frequency_penalty=params.frequency_penalty, repetition_penalty=params.repetition_penalty,
        seed=params.seed, stop=list(params.stop) or None, ignore_eos=params.ignore_eos, n=params.n,
        logit_bias=dict(params.logit_bias) if params.logit_bias else None,
    )


