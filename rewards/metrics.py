"""Budget metrics over a set of completions: logged by the budget rewards during GRPO, and reported by evaluation.

For a completion with `n` thinking tokens held to a target `N` (the requested budget, or the declared one in `auto`
mode): relative error `(n - N) / N`, in budget when `n <= N`, overshoot `max(0, n - N) / N`.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass


@dataclass(frozen=True)
class Outcome:
    """One completion: correctness, thinking tokens used, and the target it is held to (None: no target)."""

    correct: float
    thinking_tokens: int
    target_tokens: int | None = None
    declared_budget_tokens: int | None = None
    difficulty: int | float | str | None = None


def _mean(values: list[float]) -> float | None:
    return round(statistics.fmean(values), 4) if values else None


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0-100), linear between closest ranks."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def budget_summary(outcomes: list[Outcome]) -> dict:
    """accuracy, mean_thinking_tokens, mean_abs_rel_error, mean_signed_rel_error, in_budget_rate, p90_overshoot.

    Completions without a target (an `auto` completion that declared no budget) count as fully wrong on budget:
    relative error 1 and not in budget.
    """
    errors, signed, in_budget, overshoot = [], [], [], []
    for outcome in outcomes:
        if outcome.target_tokens:
            relative = (outcome.thinking_tokens - outcome.target_tokens) / outcome.target_tokens
            errors.append(abs(relative))
            signed.append(relative)
            in_budget.append(float(outcome.thinking_tokens <= outcome.target_tokens))
            overshoot.append(max(0.0, relative))
        else:
            errors.append(1.0)
            signed.append(1.0)
            in_budget.append(0.0)
            overshoot.append(1.0)
    p90 = percentile(overshoot, 90)
    return {
        "accuracy": _mean([o.correct for o in outcomes]),
        "mean_thinking_tokens": _mean([o.thinking_tokens for o in outcomes]),
        "mean_abs_rel_error": _mean(errors),
        "mean_signed_rel_error": _mean(signed),
        "in_budget_rate": _mean(in_budget),
        "p90_overshoot": None if p90 is None else round(p90, 4),
    }


def auto_summary(outcomes: list[Outcome]) -> dict:
    """accuracy, tokens, declared budget and its error, overall and per difficulty level."""
    declared = [o.declared_budget_tokens for o in outcomes if o.declared_budget_tokens]
    summary = budget_summary(outcomes)
    result = {
        "accuracy": summary["accuracy"],
        "mean_thinking_tokens": summary["mean_thinking_tokens"],
        "mean_declared_budget": _mean(declared),
        "mean_abs_rel_error": summary["mean_abs_rel_error"],
        "declared_rate": _mean([float(bool(o.declared_budget_tokens)) for o in outcomes]),
    }
    levels = defaultdict(list)
    for outcome in outcomes:
        levels[outcome.difficulty].append(outcome)
    result["by_difficulty"] = {
        str(level): {
            "accuracy": _mean([o.correct for o in group]),
            "mean_thinking_tokens": _mean([o.thinking_tokens for o in group]),
            "mean_declared_budget": _mean([o.declared_budget_tokens for o in group if o.declared_budget_tokens]),
            "count": len(group),
        }
        for level, group in sorted(levels.items(), key=lambda item: (item[0] is None, str(item[0])))
    }
    return result


def plain_summary(outcomes: list[Outcome]) -> dict:
    return {
        "accuracy": _mean([o.correct for o in outcomes]),
        "mean_thinking_tokens": _mean([o.thinking_tokens for o in outcomes]),
    }


def log_budget_metrics(log_metric, measures: list, correct: list[float | None] | None = None) -> None:
    """Per-mode budget metrics of a batch through TRL's `log_metric(name, value)` reward hook.

    Logs `budget/<mode>/abs_rel_error`, `in_budget_rate`, `thinking_tokens`, `accuracy` (when `correct` is given),
    and `budget/auto/declared_budget`. `measures` are [`rewards.budget_fidelity.BudgetMeasure`]s.
    """
    by_mode: dict[str, list[Outcome]] = defaultdict(list)
    for index, measure in enumerate(measures):
        score = correct[index] if correct is not None else None
        by_mode[measure.budget_mode].append(
            Outcome(score or 0.0, measure.thinking_tokens or 0, measure.target_tokens, measure.declared_budget_tokens)
        )
    for mode, outcomes in by_mode.items():
        summary = budget_summary(outcomes)
        log_metric(f"budget/{mode}/abs_rel_error", summary["mean_abs_rel_error"])
        log_metric(f"budget/{mode}/in_budget_rate", summary["in_budget_rate"])
        log_metric(f"budget/{mode}/thinking_tokens", summary["mean_thinking_tokens"])
        if correct is not None:
            log_metric(f"budget/{mode}/accuracy", summary["accuracy"])
        if mode == "auto":
            declared = [o.declared_budget_tokens for o in outcomes if o.declared_budget_tokens]
            if declared:
                log_metric("budget/auto/declared_budget", statistics.fmean(declared))
