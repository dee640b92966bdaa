"""Chat prompt rendering when no model chat template is given.

The endpoint normally gets a renderer built from the model's own chat template (Hugging Face
``tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)``). Models
without one get :func:`render_plain_chat`, a plain-text transcript that ends with the assistant's
turn to speak.
"""

from __future__ import annotations

__all__ = ["render_plain_chat"]


def render_plain_chat(messages: list[dict[str, str]]) -> str:
    """Render messages as ``"<role>: <content>"`` lines followed by ``"assistant:"``.

    Args:
        messages: ``[{"role": "user", "content": "..."}, ...]`` in conversation order.

    Returns:
        The prompt text.
    """
    lines = [f"{m['role']}: {m['content']}" for m in messages]
    lines.append("assistant:")
    return "\n".join(lines)
