"""Rows as chat turns: the one rendering of prompts and completions that SFT, GRPO and evaluation share.

The user turn is the question with the budget directive as its last line; the assistant turn is the completion in
DESIGN.md's format. The prompt always goes through the student's own chat template with the assistant turn opened
(its generation prompt), exactly as generation sees it. The completion is never rendered through the template: many
templates rewrite assistant turns (DeepSeek-R1-Distill's drops everything up to `</think>`, Qwen3's rebuilds the
thought and drops what comes before `<think>`, such as the `<budget>` tag), which would silently train the student on
text without its reasoning. SFT trains on the completion text as it is, followed by the end of sequence.

A template whose generation prompt already opens the thought (ends in `<think>`, as newer DeepSeek-R1-Distill
templates do) is handled everywhere: the SFT completion then starts inside the thought, and GRPO and evaluation put the
prompt's `<think>` back in front of each completion before counting and parsing ([`opened_thought`]).
"""

from __future__ import annotations

from typing import Any

from cotx_rl.budget import THINK_START, render_completion, render_prompt


class TemplateError(ValueError):
    """The student's chat template cannot carry an example as it must be trained; the message says what to do."""


def prompt_messages(question: str, budget_mode: str | None, budget_tokens: int | None = None) -> list[dict]:
    """The conversational prompt that asks for `budget_mode` (no directive when it is None)."""
    budget = budget_tokens if budget_mode not in (None, "auto") else None
    return [{"role": "user", "content": render_prompt(question, budget_mode, budget)}]


def completion_text(row: dict, budgeted: bool = True) -> str:
    """A row's target completion in DESIGN.md's format (`<budget>` first in `auto` mode)."""
    mode = row.get("budget_mode") if budgeted else None
    budget = row.get("budget_tokens") if budgeted else None
    return render_completion(row["reasoning"], row.get("response") or "", mode, budget)


def render_prompts(tokenizer: Any, user_texts: list[str]) -> list[str]:
    """Prompt texts for generation: each user turn through the chat template, with the assistant turn opened."""
    return [
        tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)
        for text in user_texts
    ]


def opened_thought(tokenizer: Any) -> str:
    """What the template's generation prompt writes of the thought itself: from its last `<think>` on (`"<think>\\n"`
    for newer DeepSeek-R1-Distill templates), or `""` when the student opens the thought."""
    prompt = render_prompts(tokenizer, ["?"])[0]
    start = prompt.rfind(THINK_START)
    return prompt[start:] if start >= 0 and not prompt[start:].strip().removeprefix(THINK_START) else ""


def template_opens_thought(tokenizer: Any) -> bool:
    """Whether the chat template's generation prompt already opens the thought: the completion then starts inside it."""
    return bool(opened_thought(tokenizer))


def _adds_bos(tokenizer: Any) -> bool:
    bos = getattr(tokenizer, "bos_token_id", None)
    return bos is not None and tokenizer("x")["input_ids"][:1] == [bos]


def sft_example(tokenizer: Any, row: dict, budgeted: bool = True) -> dict:
    """One row as [`sft_examples`] makes it."""
    return sft_examples(tokenizer, [row], budgeted)[0]


def sft_examples(tokenizer: Any, rows: list[dict], budgeted: bool = True) -> list[dict]:
    """Rows as TRL's (text) prompt-completion pairs: the prompt as generation renders it, the completion as it is.

    TRL tokenizes text with the tokenizer's special tokens; a tokenizer that adds the BOS itself would then repeat the
    template's, so the template's is left out of the text. Raises [`TemplateError`] for a completion the template's
    generation prompt cannot lead into (an `auto` completion after a prompt that already opened the thought).
    """
    # What the template does is the same for every row: found once, not once per example.
    opened = opened_thought(tokenizer)
    repeated_bos = tokenizer.bos_token if _adds_bos(tokenizer) and tokenizer.bos_token else None
    users = [
        prompt_messages(row["question"], row.get("budget_mode") if budgeted else None,
                        row.get("budget_tokens") if budgeted else None)[0]["content"]
        for row in rows
    ]  # fmt: skip
    examples = []
    for row, prompt in zip(rows, render_prompts(tokenizer, users)):
        if repeated_bos and prompt.startswith(repeated_bos):
            prompt = prompt[len(repeated_bos) :]
        completion = completion_text(row, budgeted)
        if opened:
            if not completion.startswith(opened):
                raise TemplateError(
                    f"The chat template opens the thought in its generation prompt ({opened!r}), so a completion "
                    f"must start inside it, and this one starts with {completion[:24]!r} (the `<budget>` tag of auto "
                    "mode comes before `<think>`). Train with a template whose generation prompt does not open the "
                    "thought (set chat_template_path to a .jinja file), or leave auto mode out of the examples."
                )
            completion = completion[len(opened) :]
        examples.append({"prompt": prompt, "completion": completion})
    return examples
