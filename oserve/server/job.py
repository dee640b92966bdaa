"""The state of one generation request inside the endpoint, from admission to its end."""

from __future__ import annotations

from dataclasses import dataclass, field

from oserve.backends.base import Replica, SamplingParams

__all__ = ["Job"]


@dataclass
class Job:
    """State of one generation request from admission to its end."""

    request_id: str
    endpoint: str
    prompt: str | list[int]
    prompt_param: str
    prompt_tokens: int
    request_class: str
    params: SamplingParams
    needed_tokens: int
    admitted_s: float
    replica: Replica | None = None
    tried: list[str] = field(default_factory=list)
    first_token_s: float | None = None
    output_tokens: int = 0
    finish_reason: str | None = None
    outcome: str | None = None
    engine_done: bool = False
    closed: bool = False
    output_ids: list[int] = field(default_factory=list)  # streamed so far, to resume elsewhere
    output_text: str = ""
    resumes: int = 0
