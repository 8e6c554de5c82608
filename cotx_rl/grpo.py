"""Phase 2, stage `grpo`: GRPO on the SFT student with the composite reward, with TRL's `GRPOTrainer`.

Each training prompt gets a mode and a budget drawn from the configured modes and grid, so one run teaches all three
modes. Rewards come from the recipe by registry name or dotted path (`rewards.load`), with per-reward parameters;
rewards that take a `tokenizer` get the student's. Per-mode budget metrics are logged every step by the budget
rewards (through TRL's `log_metric` hook), and `log_completions: true` logs a table of sample completions to W&B.

Problems are checked before anything loads: a row without `question` or `answer`, with an empty question, or with a
`budget_mode`/`budget_tokens` it cannot train on stops the stage with one message naming the file, the line and the id.
Golds written as numbers (`42`, `0.5`) are read as their text. A row whose gold is null or empty is dropped, and the
log counts the drops and names their lines: its completions would all score None (no signal to learn from), as the
verify stage drops such rows as `unreadable_gold`. The output folder is checked for writability first.

A LoRA SFT student continues its adapter; with `use_vllm: true` it is merged into a full model first (vLLM's weight
sync knows LoRA layers but not PEFT's trained marker rows) and the recipe's LoRA keys start a new adapter. When the chat
template's generation prompt opens the thought, each reward sees the completion with the prompt's `<think>` put back.

Run: `accelerate launch -m cotx_rl.grpo --config recipes/tiny/grpo.yaml` or `cotx-rl grpo --config ...`.
"""

from __future__ import annotations

import logging
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

import rewards
from cotx_rl.budget import BUDGET_MODES, BudgetSettingError, check_mode_proportions
from cotx_rl.chat import opened_thought, prompt_messages
from cotx_rl.config import RunArguments
from cotx_rl.io import (
    JSONDict,
    Rows,
    StageInputError,
    check_rows,
    check_writable_output,
    gold_text,
    listing,
    read_rows,
    refuse_rows,
)
from cotx_rl.models import check_model_source, load_policy, load_tokenizer
from cotx_rl.tracking import configure_wandb
from cotx_rl.training import train_and_save

logger = logging.getLogger(__name__)


@dataclass
class GRPOScriptArguments:
    """Every field is a recipe key of the `grpo` stage (with TRL's `GRPOConfig` and `ModelConfig` keys)."""

    sft_model_path: str = field(metadata={"help": "The SFT stage's output: a full model or a LoRA adapter folder."})
    problems_path: str = field(
        metadata={"help": "Training problems (`question`, `answer`); `budget_mode`/`budget_tokens` are kept if there."}
    )
    mode_proportions: JSONDict = field(
        default_factory=lambda: JSONDict({"exact": 0.4, "max": 0.3, "auto": 0.3}),
        metadata={"help": "Share of prompts per mode (JSON on the command line)."},
    )
    reward_funcs: list[str] = field(
        default_factory=lambda: ["composite_reward"],
        metadata={"help": "Reward names from the registry or dotted import paths (`my_pkg.my_module.my_reward`)."},
    )
    reward_kwargs: JSONDict = field(
        default_factory=JSONDict,
        metadata={"help": "Per-reward constructor parameters: {reward name: {param: value}} (JSON on the CLI)."},
    )
    num_problems: int | None = field(default=None, metadata={"help": "Use the first N problems only."})

    def __post_init__(self):
        try:
            self.mode_proportions = JSONDict(check_mode_proportions(self.mode_proportions))
        except BudgetSettingError as error:
            raise StageInputError(str(error)) from error


def load_problems(path: str, grid: list[int], num_problems: int | None = None) -> Rows:
    """The problems to train on: checked rows (see the module's docstring), golds as text, the first `num_problems`."""
    rows = read_rows(path, "GRPO problems")
    check_rows(rows, ["question", "answer"], text_columns=["question"], nullable=["answer"])
    bad = []
    for index, row in enumerate(rows):
        mode, budget = row.get("budget_mode"), row.get("budget_tokens")
        if mode not in (None, "", *BUDGET_MODES):
            bad.append((index, f"budget_mode is {mode!r}, not one of {', '.join(BUDGET_MODES)}"))
        elif mode in ("exact", "max") and budget not in grid:
            bad.append((index, f"budget_tokens is {budget!r} in {mode} mode, outside budget_grid {grid}"))
    refuse_rows(rows, bad, "fix the row, or leave budget_mode empty to have a mode and budget drawn")
    no_gold = [i for i, row in enumerate(rows) if gold_text(row["answer"]) is None]
    if no_gold:
        logger.warning("%s: dropped %d rows without a gold answer (%s): their rewards would be undefined.", rows.name,
                       len(no_gold), listing([rows.line_numbers[i] for i in no_gold], rows.unit))  # fmt: skip
        dropped = set(no_gold)
        rows = rows.select(i for i in range(len(rows)) if i not in dropped)
    if not rows:
        raise StageInputError(f"GRPO problems {path!r} has no row with a gold answer; fill in the answer column.")
    for row in rows:
        row["answer"] = gold_text(row["answer"])
    return rows.select(range(min(num_problems, len(rows)))) if num_problems else rows


def budgeted_prompts(rows: list[dict], args: GRPOScriptArguments, grid: list[int], seed: int) -> list[dict]:
    """Rows with a drawn (or given) mode and budget, and the chat prompt that asks for it."""
    rng = random.Random(seed)
    modes, weights = zip(*args.mode_proportions.items())
    out = []
    for row in rows:
        mode = row.get("budget_mode") or rng.choices(modes, weights)[0]
        budget = row.get("budget_tokens") if row.get("budget_mode") else None
        if mode != "auto" and budget is None:
            budget = rng.choice(grid)
        if mode != "auto" and budget not in grid:
            raise StageInputError(f"Row {row.get('id')!r} asks for budget {budget}, outside budget_grid {grid}.")
        budget = budget if mode != "auto" else None
        out.append({**row, "budget_mode": mode, "budget_tokens": budget,
                    "prompt": prompt_messages(row["question"], mode, budget)})  # fmt: skip
    return out


def build_rewards(args: GRPOScriptArguments, tokenizer) -> list:
    """Reward callables from the recipe, with the student's tokenizer for those that count tokens."""
    unknown_params = set(args.reward_kwargs) - set(args.reward_funcs)
    if unknown_params:
        raise StageInputError(
            f"reward_kwargs names {sorted(unknown_params)}, not in reward_funcs {args.reward_funcs}."
        )
    built = []
    for name in args.reward_funcs:
        kwargs = dict(args.reward_kwargs.get(name, {}))
        try:
            target = rewards.registry.resolve(name)
            if rewards.registry.accepts(target, "tokenizer") and "tokenizer" not in kwargs:
                kwargs["tokenizer"] = tokenizer
            built.append(rewards.load(target, **kwargs))
        except ValueError as error:
            raise StageInputError(str(error)) from error
    return built


class OpenedThoughtReward:
    """A reward that scores each completion with the thought the prompt opened put back in front of it.

    When the chat template's generation prompt ends in `<think>` (newer DeepSeek-R1-Distill templates), the student's
    completion starts inside the thought; the rewards count and parse whole completions, as evaluation does.
    """

    def __init__(self, reward, opened_text: str, opened_ids: list[int]):
        self.reward, self.opened_text, self.opened_ids = reward, opened_text, list(opened_ids)
        self.__name__ = getattr(reward, "__name__", type(reward).__name__)

    def _restore(self, completion):
        if isinstance(completion, str):
            return self.opened_text + completion
        first, *rest = completion  # a conversational completion: the assistant message, then any others
        return [{**first, "content": self.opened_text + (first.get("content") or "")}, *rest]

    def __call__(self, prompts=None, completions=None, completion_ids=None, **kwargs):
        completions = [self._restore(completion) for completion in completions]
        if completion_ids is not None:
            completion_ids = [self.opened_ids + list(ids) for ids in completion_ids]
        return self.reward(prompts=prompts, completions=completions, completion_ids=completion_ids, **kwargs)

    def __getattr__(self, name):  # the wrapped reward's settings (weights, tokenizer) stay readable
        if name == "reward":  # not set yet (a copy being built): no recursion
            raise AttributeError(name)
        return getattr(self.reward, name)


def with_opened_thought(reward_funcs: list, tokenizer, args: GRPOScriptArguments) -> list:
    """The rewards as they are, or wrapped in [`OpenedThoughtReward`] when the template opens the thought."""
    opened = opened_thought(tokenizer)
    if not opened:
        return reward_funcs
    if args.mode_proportions.get("auto"):
        raise StageInputError(
            f"The student's chat template opens the thought in its generation prompt ({opened!r}), so in auto mode "
            "it could not declare its <budget> before <think>: set the auto share of mode_proportions to 0, or "
            "train the student with a template whose generation prompt does not open the thought."
        )
    ids = tokenizer(opened, add_special_tokens=False)["input_ids"]
    return [OpenedThoughtReward(reward, opened, ids) for reward in reward_funcs]


def check_num_generations(num_generations: int | None) -> None:
    if num_generations is None or num_generations < 2:
        raise StageInputError(
            f"num_generations must be at least 2 (GRPO compares completions within a group), got {num_generations}."
        )


def check_settings(args: GRPOScriptArguments, training_args, run_args: RunArguments, num_processes: int) -> None:
    """The checks that fail before training: each names the value that is wrong."""
    check_num_generations(training_args.num_generations)
    weights = training_args.reward_weights
    if weights is not None and len(weights) != len(args.reward_funcs):
        raise StageInputError(
            f"reward_weights has {len(weights)} values for {len(args.reward_funcs)} reward_funcs {args.reward_funcs}."
        )
    global_batch = (
        training_args.per_device_train_batch_size * num_processes * training_args.gradient_accumulation_steps
    )
    if global_batch % training_args.num_generations:
        raise StageInputError(
            f"The global batch ({training_args.per_device_train_batch_size} per device x {num_processes} processes x "
            f"{training_args.gradient_accumulation_steps} accumulation = {global_batch}) is not divisible by "
            f"num_generations={training_args.num_generations}."
        )
    grid = run_args.budget_grid
    needed = max(grid) + run_args.answer_tokens
    if training_args.max_completion_length < needed:
        raise StageInputError(
            f"max_completion_length={training_args.max_completion_length} is shorter than the largest budget "
            f"({max(grid)}) plus the answer ({run_args.answer_tokens} tokens): set it to at least {needed}."
        )
    if not Path(args.sft_model_path).is_dir():
        raise StageInputError(f"SFT checkpoint {args.sft_model_path!r} does not exist; run the sft stage first.")


def main(script_args: GRPOScriptArguments, training_args, model_args, run_args: RunArguments | None = None):
    from accelerate import PartialState
    from datasets import Dataset
    from trl import GRPOTrainer

    run_args = run_args or RunArguments()
    check_settings(script_args, training_args, run_args, PartialState().num_processes)
    check_model_source(script_args.sft_model_path, "sft_model_path")
    check_writable_output(training_args.output_dir, "GRPO output_dir", folder=True)
    rows = load_problems(script_args.problems_path, run_args.budget_grid, script_args.num_problems)
    tokenizer = load_tokenizer(script_args.sft_model_path)
    reward_funcs = with_opened_thought(build_rewards(script_args, tokenizer), tokenizer, script_args)
    dataset = Dataset.from_list(budgeted_prompts(rows, script_args, run_args.budget_grid, training_args.seed))
    # vLLM's weight sync knows LoRA layers but not PEFT's trainable-token wrappers: merge an SFT adapter first.
    merge_into = training_args.output_dir if training_args.use_vllm else None
    model, peft_config = load_policy(script_args.sft_model_path, model_args, merge_into=merge_into)
    configure_wandb(training_args.report_to, training_args.output_dir)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=reward_funcs,
        args=training_args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    return train_and_save(trainer, tokenizer, training_args)


def make_parser():
    from trl import GRPOConfig, ModelConfig

    from cotx_rl.config import make_parser

    # TRL's `GRPOConfig` divides by num_generations in its own checks: 0 would end in a ZeroDivisionError.
    return make_parser(
        GRPOScriptArguments,
        GRPOConfig,
        ModelConfig,
        RunArguments,
        precheck=lambda values: check_num_generations(values.num_generations),
    )


if __name__ == "__main__":
    from cotx_rl.cli import main as cli

    raise SystemExit(cli(["grpo", *sys.argv[1:]]))
