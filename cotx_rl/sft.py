"""Phase 1, stage `sft`: supervised fine-tuning of the student on budgeted examples, with TRL's `SFTTrainer`.

Each example is a chat prompt (the question, then the budget directive of its mode) and a completion in DESIGN.md's
format (`<budget>` first in `auto` mode, then the thought, then the answer); the loss is on the completion only.
With `budgeted: false` the same stage trains on uncompressed traces without any directive: the full-CoT baseline.

Every example is checked before the model loads: a missing column, an empty or null `question` or `reasoning`, a
`budget_mode` other than exact, max and auto, or a `budget_tokens` that is not a positive integer (every mode needs
one: `auto` examples carry the declared budget their `<budget>` tag shows) stops the stage with one message naming
the file, the line, the id and the value. So does an `output_dir` that cannot be written.

Run: `accelerate launch -m cotx_rl.sft --config recipes/tiny/sft.yaml` or `cotx-rl sft --config ...`.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field

from cotx_rl.budget import BUDGET_MODES
from cotx_rl.chat import chat_example
from cotx_rl.io import Rows, StageInputError, check_rows, check_writable_output, read_rows, refuse_rows
from cotx_rl.models import EmbeddedStudentArguments, load_student, lora_config
from cotx_rl.tracking import configure_wandb
from cotx_rl.training import train_and_save

logger = logging.getLogger(__name__)


@dataclass
class SFTScriptArguments:
    """Every field is a recipe key of the `sft` stage (with TRL's `SFTConfig` and `ModelConfig` keys)."""

    dataset_path: str = field(
        metadata={"help": "Budgeted examples (the `compress` output), or kept traces when `budgeted: false`."}
    )
    budgeted: bool = field(
        default=True, metadata={"help": "False: train on full traces with no budget directive (full-CoT baseline)."}
    )
    drop_long_examples: bool = field(
        default=False,
        metadata={"help": "Drop examples longer than `max_length` instead of stopping (they are never cut)."},
    )


def check_examples(rows: Rows, budgeted: bool) -> None:
    """Refuse, naming file, line, id and value, any example the chat rendering could not turn into a training pair."""
    columns = ["question", "reasoning"] + (["budget_mode", "budget_tokens"] if budgeted else [])
    check_rows(rows, columns, text_columns=["question", "reasoning"])
    if not budgeted:
        return
    bad = []
    for index, row in enumerate(rows):
        mode, budget = row["budget_mode"], row["budget_tokens"]
        if mode not in BUDGET_MODES:
            bad.append((index, f"budget_mode is {mode!r}, not one of {', '.join(BUDGET_MODES)}"))
        elif isinstance(budget, bool) or not isinstance(budget, int) or budget <= 0:
            bad.append((index, f"budget_tokens is {budget!r} in {mode} mode, not a positive integer"))
    refuse_rows(rows, bad, "fix the row (the compress stage writes these columns) or remove it")


def build_dataset(rows: list[dict], budgeted: bool):
    """The chat prompt-completion pairs of rows that passed [`check_examples`]."""
    from datasets import Dataset

    return Dataset.from_list([chat_example(row, budgeted) for row in rows])


def check_lengths(dataset, tokenizer, max_length: int | None, drop: bool):
    """Never let `max_length` cut an example: stop (or drop them, when asked) before training."""
    if max_length is None:
        return dataset

    def length(example):
        text = tokenizer.apply_chat_template(example["prompt"] + example["completion"], tokenize=False)
        return {"num_tokens": len(tokenizer(text, add_special_tokens=False)["input_ids"])}

    measured = dataset.map(length, desc="measure lengths")
    too_long = [n for n in measured["num_tokens"] if n > max_length]
    if too_long and not drop:
        raise StageInputError(
            f"{len(too_long)} examples are longer than max_length={max_length} (longest {max(too_long)} tokens); "
            "raise max_length or set drop_long_examples: true."
        )
    if too_long:
        logger.warning("Dropping %d examples longer than max_length=%d.", len(too_long), max_length)
        measured = measured.filter(lambda example: example["num_tokens"] <= max_length)
    return measured.remove_columns("num_tokens")


def main(script_args: SFTScriptArguments, training_args, model_args, embedded_args=None):
    """Train and save the student (model and tokenizer, markers included) to `training_args.output_dir`."""
    from trl import SFTTrainer

    check_writable_output(training_args.output_dir, "SFT output_dir", folder=True)
    rows = read_rows(script_args.dataset_path, "SFT dataset")
    check_examples(rows, script_args.budgeted)
    model, tokenizer = load_student(model_args, embedded_args, seed=training_args.seed)
    dataset = build_dataset(rows, script_args.budgeted).shuffle(seed=training_args.seed)
    dataset = check_lengths(dataset, tokenizer, training_args.max_length, script_args.drop_long_examples)
    configure_wandb(training_args.report_to, training_args.output_dir)
    trainer = SFTTrainer(
        model=model,
        args=training_args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=lora_config(model_args, model),
    )
    return train_and_save(trainer, tokenizer, training_args)


def make_parser():
    from trl import ModelConfig, SFTConfig

    from cotx_rl.config import make_parser

    return make_parser(SFTScriptArguments, SFTConfig, ModelConfig, EmbeddedStudentArguments)


if __name__ == "__main__":
    from cotx_rl.cli import main as cli

    raise SystemExit(cli(["sft", *sys.argv[1:]]))
