"""The composite reward GRPO trains on: correctness x budget fidelity, plus optional format and efficiency terms.

The product form matters: with a sum, a short wrong answer that keeps to its budget still earns the fidelity half of
the reward, and GRPO learns to answer briefly and wrongly. With the product, fidelity pays only on correct answers.
"""

from __future__ import annotations

from typing import Any

from rewards.budget_fidelity import TokenizerHolder, fidelity_score, measure_budgets
from rewards.completions import broadcast, completion_texts
from rewards.correctness import CorrectnessReward, correctness_reward
from rewards.format import format_reward
from rewards.metrics import log_budget_metrics


class CompositeReward(TokenizerHolder):
    """`correctness x fidelity + format_weight x format + efficiency_weight x efficiency`.

    Args:
        tokenizer: the student's tokenizer, or its name or path (thinking tokens are counted in its tokens).
        format_weight (`float`, defaults to 0.0): weight of [`format_reward`] (1.0 when the completion follows its
            mode's format).
        efficiency_weight (`float`, defaults to 0.0): `auto` mode only, correct answers only: a bonus of
            `1 - declared / efficiency_max_tokens` (clipped to [0, 1]) that prefers smaller declared budgets.
        efficiency_max_tokens (`int`, defaults to 8192): the declared budget that earns no efficiency bonus (the top
            of the budget grid).
        timeout_seconds (`float`, defaults to 2.0): per-item deadline of the correctness check.
        auto_fidelity (`str`, defaults to `"exact"`): how an `auto` completion is held to the budget it declared:
            `"exact"` (as `budget_fidelity_reward`: padding up to the declaration pays) or `"max"` (one-sided: any
            length up to the declaration scores 1.0, so a student is not paid to pad).

    Returns None for a completion whose gold answer cannot be read (correctness undefined).
    """

    __name__ = "composite_reward"

    def __init__(
        self,
        tokenizer: Any = None,
        format_weight: float = 0.0,
        efficiency_weight: float = 0.0,
        efficiency_max_tokens: int = 8192,
        timeout_seconds: float = 2.0,
        auto_fidelity: str = "exact",
    ):
        super().__init__(tokenizer)
        if auto_fidelity not in ("exact", "max"):
            raise ValueError(f"auto_fidelity must be 'exact' or 'max', got {auto_fidelity!r}.")
        self.auto_fidelity = auto_fidelity
        if efficiency_max_tokens <= 0:
            raise ValueError(f"efficiency_max_tokens must be positive, got {efficiency_max_tokens}.")
        self.format_weight, self.efficiency_weight = float(format_weight), float(efficiency_weight)
        self.efficiency_max_tokens = int(efficiency_max_tokens)
        # The default settings share the module's correctness reward, and with it its worker pool.
        default = correctness_reward.timeout_seconds == timeout_seconds
        self.correctness = correctness_reward if default else CorrectnessReward(timeout_seconds=timeout_seconds)

    def __call__(
        self,
        completions: list[Any],
        answer: Any,
        budget_mode: Any,
        budget_tokens: Any = None,
        completion_ids=None,
        log_metric=None,
        **kwargs,
    ) -> list[float | None]:
        texts = completion_texts(completions)
        correct = self.correctness(texts, answer)
        measures = measure_budgets(texts, budget_mode, budget_tokens, self.tokenizer, completion_ids)
        if log_metric is not None:  # TRL's hook: per-mode budget metrics every step
            log_budget_metrics(log_metric, measures, correct)
        formats = format_reward(texts, budget_mode) if self.format_weight else [0.0] * len(texts)
        modes = broadcast(budget_mode, len(texts), "budget_mode")
        rewards = []
        for score, measure, fmt, mode in zip(correct, measures, formats, modes):
            if score is None:
                rewards.append(None)
                continue
            held_as = self.auto_fidelity if mode == "auto" else measure.budget_mode
            reward = score * fidelity_score(held_as, measure.thinking_tokens, measure.target_tokens)
            reward += self.format_weight * fmt
            if mode == "auto" and score > 0 and measure.declared_budget_tokens:
                saved = 1.0 - measure.declared_budget_tokens / self.efficiency_max_tokens
                reward += self.efficiency_weight * min(1.0, max(0.0, saved))
            rewards.append(reward)
        return rewards


composite_reward = CompositeReward()
