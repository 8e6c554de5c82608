"""Phase 1, stage `sft`: supervised fine-tuning of the student on budgeted examples, with TRL's `SFTTrainer`.

Each example is a chat prompt (the question, then the budget directive of its mode, through the student's chat template
with the assistant turn opened, as generation renders it) and a completion in DESIGN.md's format (`<budget>` first in
`auto` mode, then the thought, then the answer), kept as it is rather than rewritten by the template
(see `cotx_rl.chat`); the loss is on the completion only. Before training, a few examples are tokenized as
TRL will tokenize them and checked: the thought, its reasoning and (auto) the `<budget>` tag must all be in the trained
tokens, or the stage stops with one message (exit 2). `chat_template_path` (a .jinja file) replaces the student's
template for the whole run: it is saved with the student, so GRPO and eval render prompts with it too.
With `budgeted: false` the same stage trains on uncompressed traces without any directive: the full-CoT baseline.

Every example is checked before the model loads: a missing column, an empty or null `question` or `reasoning`, a
`budget_mode` other than exact, max and auto, or a `budget_tokens` that is not a positive integer (every mode needs
one: `auto` examples carry the declared budget their `<budget>` tag shows) stops the stage with one message naming
the file, the line, the id and the value. So does an `output_dir` that cannot be written.

Run: `accelerate launch -m cotx_rl.sft --config recipes/tiny/sft.yaml` or `cotx-rl sft --config ...`.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field

from cotx_rl.budget import BUDGET_END, BUDGET_MODES, BUDGET_START, render_thinking
from cotx_rl.chat import TemplateError, opened_thought, sft_examples
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


def build_dataset(rows: list[dict], tokenizer, budgeted: bool):
    """The text prompt-completion pairs (see `cotx_rl.chat.sft_examples`) of rows that passed [`check_examples`]."""
    from datasets import Dataset

    try:
        return Dataset.from_list(sft_examples(tokenizer, rows, budgeted))
    except TemplateError as error:
        raise StageInputError(str(error)) from error


def _trained_text(tokenizer, example: dict) -> str:
    """The completion part of an example as TRL tokenizes it (prompt + completion + end of sequence), decoded."""
    prompt_ids = tokenizer(example["prompt"])["input_ids"]
    ids = tokenizer(example["prompt"] + example["completion"] + tokenizer.eos_token)["input_ids"]
    return tokenizer.decode(ids[len(prompt_ids) :])


def check_reasoning_kept(rows: list[dict], dataset, tokenizer, budgeted: bool, samples_per_mode: int = 2) -> None:
    """Tokenize a few examples of each mode as TRL will and check that the trained tokens keep the thought, its
    reasoning and (auto) the declared `<budget>`: a tokenizer or template that loses them stops the stage."""
    opened = opened_thought(tokenizer)
    seen: dict = {}
    for index, row in enumerate(rows):
        mode = row.get("budget_mode") if budgeted else None
        if seen.get(mode, 0) >= samples_per_mode:
            continue
        seen[mode] = seen.get(mode, 0) + 1
        text = opened + _trained_text(tokenizer, dataset[index])
        wanted = [render_thinking(row["reasoning"])]
        if mode == "auto":
            wanted.insert(0, f"{BUDGET_START}{row['budget_tokens']}{BUDGET_END}")
        lost = [part for part in wanted if part not in text]
        if lost:
            raise StageInputError(
                f"SFT example {row.get('id')!r} ({mode or 'unbudgeted'}) loses {lost[0][:60]!r} when tokenized with "
                f"the student's tokenizer; the trained text would be {text[:200]!r}. Use a tokenizer that keeps the "
                "budget markers and the text as they are (set chat_template_path to a .jinja template if the chat "
                "template is the cause)."
            )


def apply_chat_template_path(tokenizer, path: str | None) -> None:
    """`chat_template_path` before the examples are rendered (TRL would only apply it when the trainer starts)."""
    if path is None:
        return
    if not (path.endswith((".jinja", ".j2")) and os.path.isfile(path)):
        raise StageInputError(f"chat_template_path {path!r} must be an existing .jinja (or .j2) file.")
    with open(path, encoding="utf-8") as file:
        tokenizer.chat_template = file.read()


def check_lengths(dataset, tokenizer, max_length: int | None, drop: bool):
    """Never let `max_length` cut an example: stop (or drop them, when asked) before training."""
    if max_length is None:
        return dataset

    def length(example):
        text = example["prompt"] + example["completion"] + tokenizer.eos_token
        return {"num_tokens": len(tokenizer(text)["input_ids"])}

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
    apply_chat_template_path(tokenizer, training_args.chat_template_path)
    dataset = build_dataset(rows, tokenizer, script_args.budgeted)
    check_reasoning_kept(rows, dataset, tokenizer, script_args.budgeted)
    dataset = dataset.shuffle(seed=training_args.seed)
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
