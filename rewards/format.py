"""Format: the completion follows the budget format of its mode (see `cotx_rl.budget`)."""

from __future__ import annotations

from typing import Any

from cotx_rl.budget import follows_format
from rewards.completions import broadcast, completion_texts


def format_reward(completions: list[Any], budget_mode: Any = None, **kwargs) -> list[float]:
    """1.0 when a completion has the parts its mode asks for, else 0.0.

    `auto` mode: `<budget>N</budget>` (N a positive integer), then `<think>...</think>`, then a non-empty answer.
    `exact`/`max` mode (or no `budget_mode` column): the same without the `<budget>` tag.
    """
    texts = completion_texts(completions)
    modes = broadcast(budget_mode, len(texts), "budget_mode")
    return [1.0 if follows_format(text, mode) else 0.0 for text, mode in zip(texts, modes)]
