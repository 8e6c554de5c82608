"""cotx-rl: budget-aware chain-of-thought distillation (SFT on budget-compressed traces, then GRPO)."""

__version__ = "0.1.0"
