"""The budget format shared by data, rewards, training and evaluation.

A completion looks like this (the `<budget>` line only in `auto` mode, where it is the student's own declaration):

```
<budget>64</budget>
<think>
{reasoning}
</think>
{short answer with \\boxed{...}}
```

A budget counts thinking tokens only: the tokens strictly between `<think>` and `</think>` in the student's tokenizer.
[`count_thinking_tokens`] is the one function that counts them; every stage calls it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

BUDGET_MODES = ("exact", "max", "auto")
THINK_START, THINK_END = "<think>", "</think>"
BUDGET_START, BUDGET_END = "<budget>", "</budget>"
SPECIAL_MARKERS = (THINK_START, THINK_END, BUDGET_START, BUDGET_END)

_DIRECTIVES = {
    "exact": "Think for {budget_tokens} tokens.",
    "max": "Think for at most {budget_tokens} tokens.",
    "auto": "Choose your thinking budget.",
}
_COMPLETION_RE = re.compile(
    r"^\s*(?:<budget>\s*(?P<declared>[^<]*?)\s*</budget>\s*)?<think>\n?(?P<reasoning>.*?)\n?</think>\s*(?P<answer>.*)$",
    re.DOTALL,
)


class BudgetSettingError(ValueError):
    """A budget grid, mode or mode mix that cannot be used; the message names the value."""


def check_budget_mode(budget_mode: str) -> str:
    if budget_mode not in BUDGET_MODES:
        raise BudgetSettingError(f"Unknown budget_mode {budget_mode!r}; expected one of {', '.join(BUDGET_MODES)}.")
    return budget_mode


def check_budget_grid(grid: Any) -> list[int]:
    """The one check of a budget grid: a non-empty list of positive integers in strictly increasing order."""
    if (
        not isinstance(grid, (list, tuple))
        or not grid
        or any(isinstance(b, bool) or not isinstance(b, int) or b <= 0 for b in grid)
        or any(a >= b for a, b in zip(grid, grid[1:]))
    ):
        raise BudgetSettingError(f"budget_grid {grid!r} must be positive integers in increasing order.")
    return list(grid)


def check_mode_proportions(proportions: Any, key: str = "mode_proportions") -> dict[str, float]:
    """The one check of a mode mix: shares (non-negative numbers) for `exact`, `max` and `auto`, not all zero."""
    if not isinstance(proportions, dict) or not proportions:
        raise BudgetSettingError(f"{key} must map modes ({', '.join(BUDGET_MODES)}) to shares, got {proportions!r}.")
    unknown = sorted(set(proportions) - set(BUDGET_MODES))
    if unknown:
        raise BudgetSettingError(f"{key} names unknown mode(s) {unknown}; use {', '.join(BUDGET_MODES)}.")
    for mode, share in proportions.items():
        if isinstance(share, bool) or not isinstance(share, (int, float)) or share < 0 or share != share:
            raise BudgetSettingError(f"{key}: the share of {mode!r} must be a number >= 0, got {share!r}.")
    if not sum(proportions.values()):
        raise BudgetSettingError(f"{key} {proportions!r} gives no mode a share above 0.")
    return {mode: float(share) for mode, share in proportions.items()}


def budget_directive(budget_mode: str, budget_tokens: int | None = None) -> str:
    """The last line of the user turn that asks for a budget (`auto` needs no `budget_tokens`)."""
    check_budget_mode(budget_mode)
    if budget_mode != "auto" and (budget_tokens is None or int(budget_tokens) <= 0):
        raise BudgetSettingError(f"budget_mode {budget_mode!r} needs a positive budget_tokens, got {budget_tokens!r}.")
    return _DIRECTIVES[budget_mode].format(budget_tokens=budget_tokens)


def render_prompt(question: str, budget_mode: str | None, budget_tokens: int | None = None) -> str:
    """The user turn: the question, then the directive line (no directive when `budget_mode` is None)."""
    if budget_mode is None:
        return question
    return f"{question}\n{budget_directive(budget_mode, budget_tokens)}"


def render_thinking(reasoning: str) -> str:
    return f"{THINK_START}\n{reasoning}\n{THINK_END}"


def render_completion(
    reasoning: str, answer_text: str, budget_mode: str | None = None, declared_budget_tokens: int | None = None
) -> str:
    """The student's completion; `declared_budget_tokens` is written in `auto` mode only."""
    head = ""
    if budget_mode == "auto":
        if declared_budget_tokens is None:
            raise ValueError("An auto-mode completion needs declared_budget_tokens.")
        head = f"{BUDGET_START}{int(declared_budget_tokens)}{BUDGET_END}\n"
    return f"{head}{render_thinking(reasoning)}\n{answer_text}"


TOKENIZER_ENV = "COTX_RL_TOKENIZER"


def resolve_tokenizer(tokenizer: Any = None) -> Any:
    """The student's tokenizer, which every thinking-token count needs.

    Args:
        tokenizer: a tokenizer object (returned as is), a model name or local folder (loaded with
            `transformers.AutoTokenizer`), or None: then the name or folder in the `COTX_RL_TOKENIZER` environment
            variable. That variable is how rewards named on a command line (`trl grpo --reward_funcs
            rewards.composite_reward`) learn the student's tokenizer, since TRL passes none to reward functions.
    """
    if tokenizer is None:
        tokenizer = os.environ.get(TOKENIZER_ENV) or None
        if tokenizer is None:
            raise BudgetSettingError(
                "Counting thinking tokens needs the student's tokenizer: pass `tokenizer=` (an object, model name or "
                f"folder), e.g. `rewards.load('composite_reward', tokenizer='path/to/student')`, or set "
                f"{TOKENIZER_ENV}=path/to/student when rewards are named on a command line (`trl grpo "
                "--reward_funcs rewards.composite_reward`)."
            )
    if not isinstance(tokenizer, str):
        return tokenizer
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(os.path.expanduser(tokenizer))
    except Exception as error:  # a missing folder or an unreachable hub: one message either way
        raise BudgetSettingError(f"Cannot load the tokenizer {tokenizer!r}: {error}") from error


@dataclass(frozen=True)
class ParsedCompletion:
    """A completion split into its parts; `well_formed` is False when the tags are missing or malformed."""

    well_formed: bool
    reasoning: str | None = None
    answer_text: str | None = None
    declared_budget_tokens: int | None = None
    has_budget_tag: bool = False


def parse_completion(text: str) -> ParsedCompletion:
    """Split a completion into declared budget, reasoning and answer.

    Exactly one `<think>...</think>` pair, at most one `<budget>` tag (before `<think>`), and a declared budget that is
    a positive integer make a well-formed completion; anything else is malformed.
    """
    if text.count(THINK_START) != 1 or text.count(THINK_END) != 1 or text.count(BUDGET_START) > 1:
        return ParsedCompletion(False)
    match = _COMPLETION_RE.match(text)
    if match is None:
        return ParsedCompletion(False)
    declared = match.group("declared")
    declared_tokens = None
    if declared is not None:
        if not declared.isdigit() or int(declared) <= 0:
            return ParsedCompletion(False, match.group("reasoning"), match.group("answer"), None, True)
        declared_tokens = int(declared)
    return ParsedCompletion(
        True, match.group("reasoning"), match.group("answer"), declared_tokens, declared is not None
    )


def follows_format(text: str, budget_mode: str | None) -> bool:
    """Whether a completion has the parts its mode asks for: a `<budget>` tag in `auto` mode only, then a thought."""
    parsed = parse_completion(text)
    if not parsed.well_formed or not parsed.answer_text.strip():
        return False
    return parsed.has_budget_tag == (budget_mode == "auto")


@lru_cache(maxsize=32)
def _marker_ids_cached(tokenizer: Any) -> tuple[int, int] | None:
    ids = []
    for marker in (THINK_START, THINK_END):
        encoded = tokenizer(marker, add_special_tokens=False)["input_ids"]
        if len(encoded) != 1:
            return None
        ids.append(encoded[0])
    return ids[0], ids[1]


def think_marker_ids(tokenizer: Any) -> tuple[int, int] | None:
    """The ids of `<think>` and `</think>` when each is a single token of `tokenizer`, else None."""
    try:
        return _marker_ids_cached(tokenizer)
    except TypeError:  # an unhashable tokenizer: no cache
        return _marker_ids_cached.__wrapped__(tokenizer)


def count_thinking_tokens(text: str | None, tokenizer: Any, completion_ids: list[int] | None = None) -> int | None:
    """Count the tokens strictly between `<think>` and `</think>`; None when the completion has no complete thought.

    When both markers are single tokens of `tokenizer` the count is taken on token ids (the generated
    `completion_ids` when given, else the tokenized `text`), so the newlines around the reasoning count too. When they
    are not (a tokenizer before SFT added them), the text between the tags is tokenized on its own.

    Args:
        text (`str` or `None`): the completion text (may be None when `completion_ids` are given).
        tokenizer: the student's tokenizer (any callable returning `input_ids`, e.g. a `PreTrainedTokenizerBase`).
        completion_ids (`list[int]`, *optional*): the generated ids, as TRL passes them to reward functions.
    """
    markers = think_marker_ids(tokenizer)
    if markers is not None:
        ids = completion_ids
        if ids is None:
            if text is None:
                return None
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids = list(ids)
        start_id, end_id = markers
        if ids.count(start_id) != 1 or ids.count(end_id) != 1:
            return None
        start, end = ids.index(start_id), ids.index(end_id)
        return end - start - 1 if end > start else None
    if text is None:
        return None
    parsed = parse_completion(text)
    if not parsed.well_formed:
        return None
    inner = text[text.index(THINK_START) + len(THINK_START) : text.index(THINK_END)]
    return len(tokenizer(inner, add_special_tokens=False)["input_ids"])


def count_reasoning_tokens(reasoning: str, tokenizer: Any) -> int:
    """Thinking tokens of a reasoning text as the student would write it (`<think>\\n{reasoning}\\n</think>`)."""
    return count_thinking_tokens(render_thinking(reasoning), tokenizer)
