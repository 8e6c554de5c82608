"""Budget fidelity: how well a completion's thinking length keeps to its budget.

- `exact`: `1 - |n - N| / N`, floored at 0.
- `max`: 1.0 while `n <= N`, then falling linearly to 0 at `2N`.
- `auto`: as `exact`, against the budget the completion declared in its own `<budget>` tag.

`n` counts thinking tokens with the student's tokenizer ([`cotx_rl.budget.count_thinking_tokens`]): from the
`completion_ids` TRL passes to reward functions when there are any, else by tokenizing the completion text. Missing or
malformed tags score 0.0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cotx_rl.budget import check_budget_mode, count_thinking_tokens, parse_completion
from rewards._completions import broadcast, completion_texts


@dataclass(frozen=True)
class BudgetMeasure:
    """One completion against its budget: `target_tokens` is N, or the declared budget in `auto` mode."""

    budget_mode: str
    thinking_tokens: int | None
    target_tokens: int | None
    declared_budget_tokens: int | None

    @property
    def measurable(self) -> bool:
        return self.thinking_tokens is not None and bool(self.target_tokens)

    @property
    def abs_rel_error(self) -> float | None:
        if not self.measurable:
            return None
        return abs(self.thinking_tokens - self.target_tokens) / self.target_tokens

    @property
    def in_budget(self) -> bool:
        return self.measurable and self.thinking_tokens <= self.target_tokens


def fidelity_score(budget_mode: str, thinking_tokens: int | None, target_tokens: int | None) -> float:
    """The fidelity of `thinking_tokens` against `target_tokens` in `budget_mode` (0.0 when either is missing)."""
    check_budget_mode(budget_mode)
    if thinking_tokens is None or not target_tokens or target_tokens <= 0:
        return 0.0
    if budget_mode == "max":
        if thinking_tokens <= target_tokens:
            return 1.0
        return max(0.0, 1.0 - (thinking_tokens - target_tokens) / target_tokens)
    return max(0.0, 1.0 - abs(thinking_tokens - target_tokens) / target_tokens)


def load_tokenizer(tokenizer: Any) -> Any:
    """A tokenizer object from an object, a model name or a local path."""
    if isinstance(tokenizer, str):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(tokenizer)
    return tokenizer


class TokenizerHolder:
    """Holds a tokenizer given as object or name; a name is loaded on first use and reloaded after unpickling."""

    def __init__(self, tokenizer: Any = None):
        self._tokenizer_spec, self._tokenizer = tokenizer, None

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None and self._tokenizer_spec is not None:
            self._tokenizer = load_tokenizer(self._tokenizer_spec)
        return self._tokenizer

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        if isinstance(self._tokenizer_spec, str):
            state["_tokenizer"] = None
        return state


def measure_budgets(
    texts: list[str],
    budget_mode: Any,
    budget_tokens: Any,
    tokenizer: Any,
    completion_ids: list[list[int]] | None = None,
) -> list[BudgetMeasure]:
    """Thinking tokens and the target each completion is held to, one [`BudgetMeasure`] per completion."""
    if tokenizer is None:
        raise ValueError(
            "Counting thinking tokens needs the student's tokenizer: build the reward with `tokenizer=` (an object, "
            "model name or path), e.g. `rewards.load('budget_fidelity_reward', tokenizer='path/to/student')`."
        )
    n = len(texts)
    modes = broadcast(budget_mode, n, "budget_mode")
    budgets = broadcast(budget_tokens, n, "budget_tokens")
    ids = broadcast(completion_ids, n, "completion_ids") if completion_ids is not None else [None] * n
    measures = []
    for text, mode, budget, token_ids in zip(texts, modes, budgets, ids):
        check_budget_mode(mode)
        parsed = parse_completion(text)
        thinking = count_thinking_tokens(text, tokenizer, token_ids) if parsed.well_formed else None
        if mode == "auto":
            target = parsed.declared_budget_tokens if parsed.has_budget_tag else None
        else:
            target = int(budget) if budget is not None else None
        measures.append(BudgetMeasure(mode, thinking, target, parsed.declared_budget_tokens))
    return measures


class BudgetFidelityReward(TokenizerHolder):
    """How closely each completion's thinking length keeps to its budget, in [0, 1].

    Args:
        tokenizer: the student's tokenizer, or its name or path (loaded on first use). Required: thinking tokens are
            counted in the student's tokens, from `completion_ids` when TRL passes them.

    Dataset columns: `budget_mode` (`exact`, `max` or `auto`) and `budget_tokens` (ignored in `auto` mode).
    """

    __name__ = "budget_fidelity_reward"

    def __call__(
        self,
        completions: list[Any],
        budget_mode: Any,
        budget_tokens: Any = None,
        completion_ids=None,
        log_metric=None,
        **kwargs,
    ) -> list[float]:
        measures = measure_budgets(
            completion_texts(completions), budget_mode, budget_tokens, self.tokenizer, completion_ids
        )
        if log_metric is not None:  # TRL's hook: per-mode budget metrics every step
            from cotx_rl.metrics import log_budget_metrics

            log_budget_metrics(log_metric, measures)
        return [fidelity_score(m.budget_mode, m.thinking_tokens, m.target_tokens) for m in measures]


budget_fidelity_reward = BudgetFidelityReward()
