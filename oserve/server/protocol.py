"""Pydantic models of the OpenAI-compatible protocol (the subset oserve serves).

Field names and defaults follow the OpenAI API and vLLM's ``protocol.py``. Unknown fields are
ignored (as vLLM does); fields oserve declares but does not support are rejected with a 400 naming
them when set to a non-default value (see :meth:`_RequestBase.unsupported`). Range checks live here
as pydantic constraints, so a bad value becomes a 400 whose ``param`` is the field name.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "StreamOptions",
    "CompletionRequest",
    "ChatMessage",
    "ChatCompletionRequest",
    "UsageInfo",
    "CompletionChoice",
    "CompletionResponse",
    "CompletionStreamChoice",
    "CompletionStreamResponse",
    "ChatResponseMessage",
    "ChatChoice",
    "ChatCompletionResponse",
    "DeltaMessage",
    "ChatStreamChoice",
    "ChatCompletionStreamResponse",
    "ModelCard",
    "ModelList",
    "ErrorInfo",
    "ErrorResponse",
]

_INT64 = 2**63 - 1
_INT32 = 2**31 - 1  # top_k beyond: the engine's int32 tensors and its transport could not carry it


def random_id(prefix: str) -> str:
    """A fresh response id like ``cmpl-3f2a...``."""
    return f"{prefix}-{uuid.uuid4().hex}"


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class StreamOptions(_Model):
    """``stream_options``: ``include_usage`` adds a last chunk with ``usage`` and no choices."""

    include_usage: bool = False
    continuous_usage_stats: bool = False


class _RequestBase(_Model):
    """Fields shared by completion and chat requests.

    Bounds are vLLM's own (``vllm.SamplingParams._verify_args``, vLLM 0.32): temperature in
    [0, 2], top_p in (0, 1], top_k -1, 0 or >= 1 (at most 2**31 - 1), min_p in [0, 1], presence and frequency penalties
    in [-2, 2], repetition_penalty > 0, no empty stop string; ``logit_bias`` follows OpenAI (token id
    keys, values in [-100, 100]). Non-finite numbers (``1e999``, ``NaN``) are refused. Limits that
    depend on the engine (a ``logit_bias`` token id beyond the vocabulary) are checked by the replica's
    :meth:`~oserve.backends.base.Replica.validate` before the response starts.
    """

    model: str | None = None
    n: int = Field(1, ge=1, le=1, description="1 (oserve supports one choice per request)")
    temperature: float | None = Field(None, ge=0.0, le=2.0, allow_inf_nan=False,
                                      description="a number in [0, 2] (0 is greedy)")
    top_p: float | None = Field(None, gt=0.0, le=1.0, allow_inf_nan=False, description="a number in (0, 1]")
    top_k: int | None = Field(None, ge=-1, le=_INT32, description="-1 or 0 (off), or an integer in [1, 2**31 - 1]")
    min_p: float | None = Field(None, ge=0.0, le=1.0, allow_inf_nan=False, description="a number in [0, 1]")
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0, allow_inf_nan=False,
                                           description="a number in [-2, 2]")
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0, allow_inf_nan=False,
                                            description="a number in [-2, 2]")
    repetition_penalty: float | None = Field(None, gt=0.0, allow_inf_nan=False,
                                             description="a finite number > 0 (1 is off)")
    seed: int | None = Field(None, ge=-_INT64 - 1, le=_INT64, description="a 64-bit signed integer")
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    ignore_eos: bool = False
    user: str | None = None
    logit_bias: dict[str, float] | None = None

    @field_validator("stop")
    @classmethod
    def _no_empty_stop(cls, v: str | list[str] | None) -> str | list[str] | None:
        if v == "" or isinstance(v, list) and any(not s for s in v):
            raise ValueError("stop strings must not be empty")
        return v

    @field_validator("logit_bias")
    @classmethod
    def _token_id_biases(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        for key, bias in (v or {}).items():
            if not key.isdigit():
                raise ValueError(f"keys must be token ids (integers >= 0), got {key!r}")
            if not -100.0 <= bias <= 100.0:
                raise ValueError(f"biases must be in [-100, 100], got {bias!r} for token {key}")
        return v

    def stop_tuple(self) -> tuple[str, ...]:
        """``stop`` as a tuple of strings."""
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def logit_bias_ids(self) -> dict[int, float] | None:
        """``logit_bias`` with integer token ids (None when unset or empty)."""
        return {int(k): float(b) for k, b in self.logit_bias.items()} if self.logit_bias else None

    def unsupported(self) -> list[str]:
        """Names of fields set to values oserve cannot honour (each a 400)."""
        return []


class CompletionRequest(_RequestBase):
    """``POST /v1/completions`` body. One prompt per request (a string or a list of token ids)."""

    prompt: str | list[int] | list[str] | list[list[int]]
    max_tokens: int | None = Field(16, ge=1, description="an integer >= 1")
    echo: bool = False
    logprobs: int | None = None
    suffix: str | None = None

    def unsupported(self) -> list[str]:
        bad = super().unsupported()
        if self.logprobs is not None:
            bad.append("logprobs")
        if self.suffix:
            bad.append("suffix")
        return bad


class ChatMessage(_Model):
    """One chat message. ``content`` may be a string or a list of ``{"type": "text", "text": ...}`` parts."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None

    @field_validator("content")
    @classmethod
    def _text_parts_only(cls, v: str | list[dict[str, Any]] | None) -> str | list[dict[str, Any]] | None:
        if isinstance(v, list):
            for part in v:
                if part.get("type") != "text" or not isinstance(part.get("text"), str):
                    raise ValueError("only text content parts ({'type': 'text', 'text': ...}) are supported")
        return v

    def text(self) -> str:
        """The message's text (text parts joined)."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p["text"] for p in self.content)


class ChatCompletionRequest(_RequestBase):
    """``POST /v1/chat/completions`` body."""

    messages: list[ChatMessage]
    max_tokens: int | None = Field(None, ge=1, description="an integer >= 1")
    max_completion_tokens: int | None = Field(None, ge=1, description="an integer >= 1")
    logprobs: bool | None = False
    top_logprobs: int | None = None
    tools: list[dict[str, Any]] | None = None
    response_format: dict[str, Any] | None = None

    def unsupported(self) -> list[str]:
        bad = super().unsupported()
        if self.logprobs:
            bad.append("logprobs")
        if self.top_logprobs:
            bad.append("top_logprobs")
        if self.tools:
            bad.append("tools")
        if self.response_format and self.response_format.get("type") not in (None, "text"):
            bad.append("response_format")
        return bad

    def requested_max_tokens(self) -> int | None:
        """``max_completion_tokens`` if set, else ``max_tokens`` (None: fill the context)."""
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class UsageInfo(_Model):
    """Token counts of a request."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class CompletionChoice(_Model):
    index: int = 0
    text: str
    logprobs: None = None
    finish_reason: str | None = None


class CompletionResponse(_Model):
    id: str = Field(default_factory=lambda: random_id("cmpl"))
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[CompletionChoice]
    usage: UsageInfo


class CompletionStreamChoice(_Model):
    index: int = 0
    text: str
    logprobs: None = None
    finish_reason: str | None = None


class CompletionStreamResponse(_Model):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionStreamChoice]
    usage: UsageInfo | None = None


class ChatResponseMessage(_Model):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(_Model):
    index: int = 0
    message: ChatResponseMessage
    logprobs: None = None
    finish_reason: str | None = None


class ChatCompletionResponse(_Model):
    id: str = Field(default_factory=lambda: random_id("chatcmpl"))
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatChoice]
    usage: UsageInfo


class DeltaMessage(_Model):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatStreamChoice(_Model):
    index: int = 0
    delta: DeltaMessage
    logprobs: None = None
    finish_reason: str | None = None


class ChatCompletionStreamResponse(_Model):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatStreamChoice]
    usage: UsageInfo | None = None


class ModelCard(_Model):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=lambda: int(time.time()))
    owned_by: str = "oserve"
    root: str | None = None
    max_model_len: int | None = None


class ModelList(_Model):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorInfo(_Model):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(_Model):
    """The error envelope: ``{"error": {"message", "type", "param", "code"}}``."""

    error: ErrorInfo
