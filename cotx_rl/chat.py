"""Rows as chat turns: the one rendering of prompts and completions that SFT, GRPO and evaluation share.

The user turn is the question with the budget directive as its last line; the assistant turn is the completion in
DESIGN.md's format. Both go through the student's own chat template.
"""

from __future__ import annotations

from typing import Any

from cotx_rl.budget import THINK_START, render_completion, render_prompt


def prompt_messages(question: str, budget_mode: str | None, budget_tokens: int | None = None) -> list[dict]:
    """The conversational prompt that asks for `budget_mode` (no directive when it is None)."""
    budget = budget_tokens if budget_mode not in (None, "auto") else None
    return [{"role": "user", "content": render_prompt(question, budget_mode, budget)}]


def chat_example(row: dict, budgeted: bool = True) -> dict:
    """A row as TRL's conversational prompt-completion pair (the completion carries `<budget>` in `auto` mode)."""
    mode = row.get("budget_mode") if budgeted else None
    budget = row.get("budget_tokens") if budgeted else None
    return {
        "prompt": prompt_messages(row["question"], mode, budget),
        "completion": [
            {
                "role": "assistant",
                "content": render_completion(row["reasoning"], row.get("response") or "", mode, budget),
            }
        ],
    }


def render_prompts(tokenizer: Any, user_texts: list[str]) -> list[str]:
    """Prompt texts for generation: each user turn through the chat template, with the assistant turn opened."""
    return [
        tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)
        for text in user_texts
    ]


def template_opens_thought(tokenizer: Any) -> bool:
    """Whether the chat template's generation prompt already opens the thought (ends in `<think>`, as newer
    DeepSeek-R1-Distill templates do): the completion then starts inside the thought."""
    return render_prompts(tokenizer, ["?"])[0].rstrip().endswith(THINK_START)
