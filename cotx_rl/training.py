"""What both training phases share: the train-resume-save step and finding the checkpoint to resume from."""

from __future__ import annotations

import logging
from pathlib import Path

logger = logging.getLogger(__name__)


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
    from cotx_rl.models import expose_output_bias

    expose_output_bias(trainer.model)
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
