"""Stage `generate`: serve a budget student on your questions, with the budget enforced at decode time.

```bash
cotx-rl generate --model outputs/tiny/grpo --input questions.jsonl --output answers.jsonl \
    --budget_mode max --budget_tokens 48
```

Input: JSONL with a `question` field per line (other fields are passed through; one that clashes with an output
field keeps its value as `input_<name>`), a JSON/CSV/Parquet file with a `question` column, or plain text with one
question per line. Output: one JSONL row per question with `question`, `budget_mode`, `budget_tokens`,
`completion`, `answer` (the extracted final answer), `thinking_tokens`, `declared_budget_tokens` (auto mode),
`hard_stopped`, `completion_tokens` and `finish_reason`.

The hard stop (`hard_stop`, on by default in `max` mode) closes a thought that reaches its limit with `</think>` and
caps the answer after it at `answer_tokens`: the limit is N in `max` mode, N plus `hard_stop_tolerance` of it in
`exact` mode, and the student's declared budget plus that tolerance in `auto` mode. The share of rows where it fired
is logged, so that one sees how well the student keeps the budget on its own. The Python API is
[`BudgetedGenerator`].
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

from cotx_rl.config import RunArguments
from cotx_rl.generation import (
    DEFAULT_HARD_STOP_TOLERANCE,
    HARD_STOP_BY_DEFAULT,
    BudgetedGenerator,
    check_request,
    summarize,
)
from cotx_rl.io import (
    READABLE_SUFFIXES,
    Rows,
    StageInputError,
    check_output_path,
    check_rows,
    check_writable_output,
    read_rows,
    write_rows,
)
from cotx_rl.models import check_model_source

__all__ = ["BudgetedGenerator", "GenerateArguments", "main", "read_questions"]
logger = logging.getLogger(__name__)


@dataclass
class GenerateArguments:
    """Every field is a recipe key (or flag) of the `generate` stage."""

    model: str = field(metadata={"help": "The student: a model folder or name (a full model or a LoRA adapter)."})
    input: str = field(
        metadata={
            "help": "Questions: JSONL with a `question` field (other fields passed through), a JSON/CSV/Parquet file "
            "with a `question` column, or plain text with one question per line."
        }
    )
    output: str = field(metadata={"help": "Output file (.jsonl, or .parquet): one row per question."})
    budget_mode: str = field(metadata={"help": "exact (about N), max (at most N) or auto (the student chooses)."})
    budget_tokens: int | None = field(
        default=None, metadata={"help": "N, the thinking budget in tokens (exact and max; none in auto mode)."}
    )
    hard_stop: bool | None = field(
        default=None,
        metadata={
            "help": "Close a thought that reaches its limit with </think> and cap the answer at answer_tokens. "
            "Default: on for max, off for exact and auto."
        },
    )
    hard_stop_tolerance: float = field(
        default=DEFAULT_HARD_STOP_TOLERANCE,
        metadata={
            "help": "Share of the budget a thought may run over before the hard stop closes it: the limit is "
            "N + ceil(tolerance * N) in exact mode and declared + ceil(tolerance * declared) in auto mode (max: N). "
            "An auto thought that declares no budget is held to the largest budget_grid budget plus the tolerance."
        },
    )
    question_column: str = field(default="question", metadata={"help": "Field of the input that holds the question."})
    engine: str = field(
        default="auto",
        metadata={"help": "`auto` (vLLM when installed with a GPU, else transformers), `vllm` or `transformers`."},
    )
    max_new_tokens: int = field(default=512, metadata={"help": "Most tokens generated per completion."})
    batch_size: int = field(default=64, metadata={"help": "Prompts per generation batch (transformers)."})
    device: str = field(default="auto", metadata={"help": "`auto` (a GPU when there is one), `cpu`, `cuda`, ..."})
    dtype: str = field(default="auto", metadata={"help": "Weights dtype (auto, bfloat16, float32)."})

    def __post_init__(self):
        check_request(self.budget_mode, self.budget_tokens)
        if self.engine not in ("auto", "vllm", "transformers"):
            raise StageInputError(f"Unknown engine {self.engine!r}; choose auto, vllm or transformers.")
        if self.hard_stop_tolerance < 0:
            raise StageInputError(f"hard_stop_tolerance must be >= 0, got {self.hard_stop_tolerance}.")
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise StageInputError("max_new_tokens and batch_size must be positive.")


def read_questions(path: str | Path, question_column: str = "question") -> Rows:
    """Input rows, each with a non-empty string under `question_column`; a bad line is a `StageInputError` naming the
    file and the line.

    JSONL (`.jsonl`, `.ndjson`) is read line by line (blank lines skipped), JSON/CSV/Parquet as tables, anything else
    as plain text with one question per line: lines end at `\n` (or `\r\n`) only, so that a form feed or a Unicode
    line separator pasted into a question does not split it, and a UTF-8 byte order mark is not part of the first.
    """
    path = Path(path)
    if path.suffix in READABLE_SUFFIXES:
        rows = read_rows(path, "Input")
        check_rows(rows, [], text_columns=[question_column])
        return rows
    if not path.is_file():
        raise StageInputError(f"Input {str(path)!r} " + ("is not a file." if path.exists() else "does not exist."))
    try:
        lines = path.read_text(encoding="utf-8-sig").split("\n")
    except UnicodeDecodeError as error:
        raise StageInputError(f"Input {str(path)!r} is not UTF-8 text: {error}") from error
    numbered = [(number, line.strip()) for number, line in enumerate(lines, 1) if line.strip()]
    if not numbered:
        raise StageInputError(f"Input {str(path)!r} has no questions.")
    return Rows([{question_column: line} for _, line in numbered], [n for n, _ in numbered], f"Input {str(path)!r}")


def output_row(source: dict, generated: dict, question_column: str) -> dict:
    """The generated fields, after the input's other fields; an input field they would overwrite is kept as
    `input_<name>`."""
    passed = {}
    for key, value in source.items():
        if key == question_column:
            continue
        passed[f"input_{key}" if key in generated else key] = value
    return passed | generated


def main(args: GenerateArguments, run_args: RunArguments | None = None) -> dict:
    """Generate one completion per question into `args.output`; returns the run's summary (hard-stop rate, tokens)."""
    run_args = run_args or RunArguments()
    rows = read_questions(args.input, args.question_column)
    output = check_output_path(args.output, "Output file")
    check_writable_output(output, "Output file")
    check_model_source(args.model, "model")
    generator = BudgetedGenerator(
        args.model, engine=args.engine, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
        answer_tokens=run_args.answer_tokens, hard_stop_tolerance=args.hard_stop_tolerance,
        max_budget_tokens=max(run_args.budget_grid), device=args.device, dtype=args.dtype, work_dir=str(output.parent),
    )  # fmt: skip
    questions = [row[args.question_column] for row in rows]
    generated = generator.generate(questions, args.budget_mode, args.budget_tokens, args.hard_stop)
    write_rows(
        output, [output_row(row, gen, args.question_column) for row, gen in zip(rows, generated)], "Output file"
    )
    hard_stop = HARD_STOP_BY_DEFAULT[args.budget_mode] if args.hard_stop is None else args.hard_stop
    summary = {"budget_mode": args.budget_mode, "budget_tokens": args.budget_tokens, "hard_stop": hard_stop}
    summary |= summarize(generated)
    logger.info(
        "Wrote %d completions to %s (%s%s). Hard stop %s: fired on %d of %d rows (%.1f%%); mean thinking tokens %.1f.",
        len(generated), output, args.budget_mode, f" {args.budget_tokens}" if args.budget_tokens else "",
        "on" if hard_stop else "off", summary["num_hard_stopped"], len(generated), 100 * summary["hard_stop_rate"],
        summary["mean_thinking_tokens"],
    )  # fmt: skip
    return summary


def make_parser():
    from cotx_rl.config import make_parser

    return make_parser(GenerateArguments, RunArguments)


if __name__ == "__main__":
    from cotx_rl.cli import main as cli

    raise SystemExit(cli(["generate", *sys.argv[1:]]))
