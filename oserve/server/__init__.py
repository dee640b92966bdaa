"""The OpenAI-compatible HTTP endpoint: ``create_app(router, ...)`` builds the FastAPI app."""

from .app import DEFAULT_MAX_BODY_BYTES, api_key_dependency, create_app
from .serving import AdmissionMonitor, OpenAIServing, PromptRenderer, TokenCounter

__all__ = [
    "create_app",
    "api_key_dependency",
    "DEFAULT_MAX_BODY_BYTES",
    "OpenAIServing",
    "AdmissionMonitor",
    "PromptRenderer",
    "TokenCounter",
]
