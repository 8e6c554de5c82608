"""Loading students: the embedded one built from a config, or any causal LM by name or path (full or LoRA).

Also the pieces every training stage shares: the budget markers added to a tokenizer that lacks them, rendering rows
as chat prompts and completions, and the W&B default of running offline without an API key.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cotx_rl.budget import SPECIAL_MARKERS, render_completion, render_prompt
from cotx_rl.io import StageInputError, looks_like_local_path

logger = logging.getLogger(__name__)
EMBEDDED = "embedded"
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


@dataclass
class EmbeddedStudentArguments:
    """Size of the embedded student (used when `model_name_or_path: embedded`)."""

    student_hidden_size: int = field(default=128, metadata={"help": "Embedded student: hidden size."})
    student_num_layers: int = field(default=4, metadata={"help": "Embedded student: transformer layers."})
    student_num_heads: int = field(default=4, metadata={"help": "Embedded student: attention heads."})


def check_model_source(name: str | None, what: str = "model_name_or_path") -> None:
    """Fail before any work when a local model path does not exist."""
    if not name:
        raise StageInputError(f"{what} is required (a model name, a local path, or `embedded`).")
    if name != EMBEDDED and looks_like_local_path(name) and not Path(name).expanduser().is_dir():
        raise StageInputError(f"{what} {name!r} does not exist (no such directory).")


def add_budget_markers(tokenizer, model=None) -> list[int]:
    """Add `<think>`, `</think>`, `<budget>`, `</budget>` as single tokens when missing; resize the model to match.

    They are added as ordinary (not special) tokens so that decoding with `skip_special_tokens=True`, as TRL does,
    keeps them in the text rewards read. Returns the ids of the added tokens.
    """
    vocab = tokenizer.get_vocab()
    missing = [marker for marker in SPECIAL_MARKERS if marker not in vocab]
    if missing:
        tokenizer.add_tokens(missing, special_tokens=False)
        logger.info("Added budget markers %s to the tokenizer.", missing)
    if model is not None and model.get_input_embeddings().weight.shape[0] < len(tokenizer):
        model.resize_token_embeddings(len(tokenizer))
    return tokenizer.convert_tokens_to_ids(missing)


def load_tokenizer(name_or_path: str):
    if name_or_path == EMBEDDED:
        from cotx_rl.tiny import build_tiny_tokenizer

        return build_tiny_tokenizer()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.chat_template is None:
        tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    return tokenizer


def load_student(model_args, embedded: EmbeddedStudentArguments | None = None, seed: int = 0) -> tuple[Any, Any]:
    """`(model, tokenizer)` for training: the embedded student from scratch, or a pretrained causal LM.

    The tokenizer gets the budget markers; the model's embeddings are resized to match.
    """
    check_model_source(model_args.model_name_or_path)
    tokenizer = load_tokenizer(model_args.model_name_or_path)
    if model_args.model_name_or_path == EMBEDDED:
        from cotx_rl.tiny import build_tiny_student

        embedded = embedded or EmbeddedStudentArguments()
        model = build_tiny_student(
            tokenizer,
            seed=seed,
            hidden_size=embedded.student_hidden_size,
            num_layers=embedded.student_num_layers,
            num_heads=embedded.student_num_heads,
            attn_implementation=model_args.attn_implementation or "eager",
        )
    else:
        from transformers import AutoModelForCausalLM

        kwargs = {"revision": model_args.model_revision, "dtype": model_args.dtype or "auto"}
        if model_args.attn_implementation:
            kwargs["attn_implementation"] = model_args.attn_implementation
        model = AutoModelForCausalLM.from_pretrained(model_args.model_name_or_path, **kwargs)
    added = add_budget_markers(tokenizer, model)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model._cotx_added_token_ids = added  # LoRA has to train these rows of the embedding too
    return model, tokenizer


def lora_config(model_args, model) -> Any:
    """TRL's LoRA config from `ModelConfig`, training the embedding rows of any marker tokens just added."""
    from trl import get_peft_config

    config = get_peft_config(model_args)
    added = getattr(model, "_cotx_added_token_ids", [])
    if config is not None and added:
        config.trainable_token_indices = {"embed_tokens": list(added)}
    return config


def chat_example(row: dict, budgeted: bool = True) -> dict:
    """A row as TRL's conversational prompt-completion pair, per DESIGN.md's budget format."""
    mode = row.get("budget_mode") if budgeted else None
    budget = row.get("budget_tokens") if budgeted else None
    return {
        "prompt": [{"role": "user", "content": render_prompt(row["question"], mode, budget)}],
        "completion": [
            {
                "role": "assistant",
                "content": render_completion(row["reasoning"], row.get("response") or "", mode, budget),
            }
        ],
    }


def configure_tracking(training_args) -> None:
    """W&B runs offline without an API key (a run folder `wandb sync` uploads later); say so once."""
    report_to = training_args.report_to or []
    report_to = [report_to] if isinstance(report_to, str) else report_to
    if "wandb" not in report_to:
        return
    os.environ.setdefault("WANDB_DIR", str(Path(training_args.output_dir)))
    Path(os.environ["WANDB_DIR"]).mkdir(parents=True, exist_ok=True)
    if not os.environ.get("WANDB_API_KEY") and os.environ.get("WANDB_MODE") is None:
        os.environ["WANDB_MODE"] = "offline"
        logger.warning(
            "WANDB_API_KEY is not set: W&B runs offline in %s/wandb; upload later with `wandb sync`. "
            "Set `report_to: none` to turn tracking off.",
            os.environ["WANDB_DIR"],
        )


def resume_checkpoint(training_args) -> str | bool | None:
    """What `Trainer.train(resume_from_checkpoint=...)` should get.

    `resume_from_checkpoint: true` resumes from the last checkpoint in `output_dir` when there is one and starts
    fresh when there is none, so a recipe (or a pipeline rerun after a crash) can always set it.
    """
    value = training_args.resume_from_checkpoint
    if isinstance(value, str) and value.lower() in ("true", "false"):
        value = value.lower() == "true"
    if value is not True:
        return value or None
    last = last_complete_checkpoint(training_args.output_dir)
    if last is None:
        logger.info("No checkpoint in %s yet: starting from the beginning.", training_args.output_dir)
    else:
        logger.info("Resuming from %s.", last)
    return last


def train_and_save(trainer, tokenizer, training_args):
    """Train (resuming per [`resume_checkpoint`]), then save the model and, once, the tokenizer with its markers."""
    trainer.train(resume_from_checkpoint=resume_checkpoint(training_args))
    trainer.save_model(training_args.output_dir)
    if trainer.accelerator.is_main_process:
        tokenizer.save_pretrained(training_args.output_dir)
    trainer.accelerator.wait_for_everyone()
    return trainer


def last_complete_checkpoint(output_dir: str) -> str | None:
    """The newest `checkpoint-N` in `output_dir` that has its `trainer_state.json`.

    The Trainer writes that file last, so a run killed while saving leaves a folder without it; resuming from such a
    folder fails, so it is skipped (with a warning) in favour of the one before.
    """
    folder = Path(output_dir)
    if not folder.is_dir():
        return None
    found = [p for p in folder.glob("checkpoint-*") if p.is_dir() and p.name.removeprefix("checkpoint-").isdigit()]
    complete = [p for p in found if (p / "trainer_state.json").is_file()]
    for partial in sorted(set(found) - set(complete)):
        logger.warning("Skipping %s: a run stopped while writing it (no trainer_state.json).", partial)
    return str(max(complete, key=lambda p: int(p.name.removeprefix("checkpoint-")))) if complete else None
