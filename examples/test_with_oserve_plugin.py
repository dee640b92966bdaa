"""An application's tests written against oserve with nothing but its pytest plugin.

The plugin ships with oserve (entry point ``pytest11``): ``oserve_client`` is an ``openai.OpenAI``
client bound to a stack that ``oserve_stack`` started on the fake backend (no model is loaded);
``oserve_sim`` replays traces on a simulated cluster. Run ``pytest examples`` (or, with real vLLM
engines, ``pytest examples --oserve-backend vllm``). See docs/testing.md.
"""

from __future__ import annotations

import openai
import pytest

from oserve.testing import poisson_trace

MODEL = "smollm2-135m-instruct"


def test_chat_completion_answers(oserve_client: openai.OpenAI) -> None:
    reply = oserve_client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Say hello"}], max_tokens=5)
    assert reply.choices[0].message.content
    assert reply.usage is not None and 1 <= reply.usage.completion_tokens <= 5


def test_streaming_yields_the_same_text_as_one_shot(oserve_client: openai.OpenAI) -> None:
    kwargs = dict(model=MODEL, prompt="one two three", max_tokens=6, temperature=0.0)
    whole = oserve_client.completions.create(**kwargs).choices[0].text
    chunks = [c.choices[0].text for c in oserve_client.completions.create(stream=True, **kwargs) if c.choices]
    assert "".join(chunks) == whole


def test_bad_request_is_an_openai_400(oserve_client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        oserve_client.completions.create(model=MODEL, prompt="hi", max_tokens=-1)
    assert info.value.status_code == 400


def test_unknown_model_is_refused(oserve_client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        oserve_client.completions.create(model="no-such-model", prompt="hi", max_tokens=2)


def test_oserve_serves_a_shifting_load_on_a_simulated_cluster(oserve_sim) -> None:
    trace = poisson_trace(rate_rps=3.0, duration_s=600, seed=1)
    run = oserve_sim.run(trace, policy="oserve")
    assert run.summary["completed"] > 0.9 * len(trace)
    assert 0.0 < run.summary["slo_attainment"] <= 1.0
