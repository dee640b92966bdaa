"""The endpoint's sampling bounds agree with vLLM's own validator, and vLLM's refusals name the field.

Runs vLLM's ``SamplingParams`` checks in this process (no engine is started)."""

from __future__ import annotations

import json
import math

import pytest
from test_request_path import ACCEPTED, REFUSED  # type: ignore[import-not-found]

from oserve.backends.base import SamplingParams

pytest.importorskip("vllm")

from oserve.backends.vllm_errors import refusal, refusal_types, vllm_sampling_params  # noqa: E402

# Fields whose bound is vLLM's SamplingParams check (not OpenAI's logit_bias rules, not the
# vocabulary, not oserve's own limits such as n == 1 or the 64-bit seed of vLLM's transport).
_VLLM_CHECKED = {"temperature", "top_p", "top_k", "min_p", "presence_penalty", "frequency_penalty",
                 "repetition_penalty", "stop", "max_tokens"}


def _params(field: str, value: str) -> SamplingParams:
    v = json.loads(value)
    if field == "stop":
        v = (v,) if isinstance(v, str) else tuple(v)
    return SamplingParams(**{"max_tokens": 4, field: v})


_OSERVE_ONLY = {("top_k", str(2**31))}  # oserve's own limit: vLLM's int32 top_k tensor, not its validator


@pytest.mark.parametrize(("field", "value", "param"),
                         [c for c in REFUSED if c[0] in _VLLM_CHECKED and c[:2] not in _OSERVE_ONLY])
def test_vllm_refuses_what_the_endpoint_refuses_naming_the_field(field: str, value: str, param: str) -> None:
    with pytest.raises(refusal_types()) as info:
        vllm_sampling_params(_params(field, value))
    err = refusal(info.value, None)
    assert err.param == param and err.status_code == 400, err.message


@pytest.mark.parametrize(("field", "value"), ACCEPTED)
def test_vllm_accepts_what_the_endpoint_accepts(field: str, value: str) -> None:
    if field == "logit_bias":
        params = SamplingParams(max_tokens=4, logit_bias={int(k): b for k, b in json.loads(value).items()})
    elif field == "n":
        params = SamplingParams(max_tokens=4, n=int(value))
    else:
        params = _params(field, value)
    vllm_sampling_params(params)


def test_n_above_one_and_out_of_vocab_logit_bias_are_named() -> None:
    class _Config:  # stands in for vLLM's ModelConfig: the two values verify() reads
        max_logprobs = 20

        @staticmethod
        def get_vocab_size() -> int:
            return 100

    with pytest.raises(refusal_types()) as info:
        vllm_sampling_params(SamplingParams(max_tokens=4, logit_bias={150: 1.0})).verify(_Config(), None, None, None)
    assert refusal(info.value, None).param == "logit_bias"
    with pytest.raises(refusal_types()) as info:
        vllm_sampling_params(SamplingParams(max_tokens=4, n=0))
    assert refusal(info.value, None).param == "n"
    assert not math.isfinite(json.loads("1e999"))  # what a client's 1e999 becomes before the checks
