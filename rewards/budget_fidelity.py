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

from cotx_rl.budget import check_budget_mode, count_thinking_tokens, parse_completion, resolve_tokenizer
from rewards.completions import broadcast, completion_texts
from rewards.metrics import log_budget_metrics


@dataclass(frozen=True)
class BudgetMeasure:
    """One completion against its budget: `target_tokens` is N, or the declared budget in `auto` mode."""

    budget_mode: str
    thinking_tokens: int | None
    target_tokens: int | None
    declared_budget_tokens: int | None


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


class TokenizerHolder:
    """Holds the student's tokenizer, given as an object or a name; a name is loaded on first use.

    Without one (`tokenizer=None`), the name or folder in `$COTX_RL_TOKENIZER` is loaded on first use (see
    [`cotx_rl.budget.resolve_tokenizer`]); a reward built bare, as `trl grpo --reward_funcs` builds it, works that way.
    A tokenizer loaded from a name is not pickled along; it is loaded again where the reward is unpickled.
    """

    def __init__(self, tokenizer: Any = None):
        self._tokenizer_spec, self._tokenizer = tokenizer, None

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            self._tokenizer = resolve_tokenizer(self._tokenizer_spec)
        return self._tokenizer

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        if not state["_tokenizer_spec"] or isinstance(state["_tokenizer_spec"], str):
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
            log_budget_metrics(log_metric, measures)
        return [fidelity_score(m.budget_mode, m.thinking_tokens, m.target_tokens) for m in measures]


budget_fidelity_reward = BudgetFidelityReward()
