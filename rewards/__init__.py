"""Reward functions for budget-aware reasoning, usable on their own with TRL's `GRPOTrainer`.

Every reward takes TRL's `reward_funcs` signature (`prompts`, `completions`, `completion_ids` and dataset columns by
name, plus `**kwargs`) and returns one `float | None` per completion. Parameterised rewards are classes; the
lower-case names are ready-made instances (or, for `format_reward`, a function). `completion_text` reads a
completion (a string or chat messages) as text, for rewards of your own.

`rewards` uses nothing of `cotx_rl` but its budget format (`cotx_rl.budget`: directives, completion parsing and
thinking-token counting), so that it can be used alone with TRL.
"""

from rewards.budget_fidelity import BudgetFidelityReward, budget_fidelity_reward
from rewards.completions import completion_text, completion_texts
from rewards.composite import CompositeReward, composite_reward
from rewards.correctness import CorrectnessReward, WorkerStartError, correctness_reward
from rewards.format import format_reward
from rewards.registry import REGISTRY, load

__all__ = [
    "REGISTRY",
    "WorkerStartError",
    "BudgetFidelityReward",
    "CompositeReward",
    "CorrectnessReward",
    "budget_fidelity_reward",
    "completion_text",
    "completion_texts",
    "composite_reward",
    "correctness_reward",
    "format_reward",
    "load",
]
