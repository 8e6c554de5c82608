"""Completions arrive as plain strings or as chat messages; rewards read them as text."""

from __future__ import annotations

from typing import Any


def completion_text(completion: Any) -> str:
    """The text of one completion: a string as is, or the joined content of chat messages.

    TRL passes conversational completions as `[{"role": "assistant", "content": "..."}]`; content may itself be a list
    of typed parts (`{"type": "text", "text": ...}`).
    """
    if completion is None:
        return ""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    parts = []
    for message in completion:
        content = message.get("content", "") if isinstance(message, dict) else message
        if isinstance(content, list):
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        parts.append(str(content or ""))
    return "".join(parts)


def completion_texts(completions: list[Any]) -> list[str]:
    return [completion_text(c) for c in completions]


def broadcast(values: Any, n: int, name: str) -> list[Any]:
    """A per-completion column as a list of length `n` (a scalar is repeated)."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
        return [values] * n
    values = list(values)
    if len(values) != n:
        raise ValueError(f"Column {name!r} has {len(values)} values for {n} completions.")
    return values
