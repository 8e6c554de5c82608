"""Stage `eval`: accuracy and budget fidelity of every model, for every mode and budget, with baselines.

Models are named in the recipe: `full_cot` (fine-tuned on uncompressed traces, no budget; evaluated without a
directive), `truncation` (the full-CoT student's thought force-closed at N tokens), and the budget students (`sft`,
`grpo`, or any other name), evaluated in `exact` and `max` mode at every grid budget, in `auto` mode, and without a
directive. Greedy decoding throughout.

Outputs in `output_dir`: `completions.jsonl` (every completion, one row per problem and run: model, mode, budget,
question, gold, completion, extracted answer, correctness, thinking tokens, cut off), `report.json` (schema in the
README), `report.md` (the tables), and PNG plots: accuracy against mean thinking tokens (the Pareto picture), requested
against actual thinking tokens, and thinking tokens by difficulty in `auto` mode. All are also logged to W&B when
`report_to: wandb`, the completions as a table.

A wrong answer and a completion cut off by a limit are counted apart: `cut_off_rate` is the share of completions that
are not correct and did not end on their own (they ran into `max_new_tokens`, or, in the truncation baseline, the
answer after the forced `</think>` ran into `answer_tokens`); `wrong_rate` is the rest of the incorrect ones. Problems
whose gold cannot be read (null, or no answer in it) are left out of every rate and counted (`num_unscored`).
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cotx_rl.budget import render_prompt
from cotx_rl.config import RunArguments
from cotx_rl.generation import BudgetedGenerator, Generation, ThoughtLimit, completion_fields
from cotx_rl.io import (
    JSONDict,
    StageInputError,
    check_rows,
    check_unique_ids,
    check_writable_output,
    read_rows,
    write_json,
    write_rows,
)
from cotx_rl.models import check_model_source
from cotx_rl.tracking import configure_wandb
from rewards.correctness import correctness_reward
from rewards.metrics import Outcome, auto_summary, budget_summary, plain_summary

logger = logging.getLogger(__name__)
BUDGET_MODELS_EXCLUDED = ("full_cot", "truncation")
CUT_OFF_REASONS = ("length", "answer_cap")
# The columns of completions.jsonl and of the W&B table, in this order.
COMPLETION_COLUMNS = (
    "model", "mode", "budget_tokens", "id", "question", "gold", "completion", "answer", "correct", "cut_off",
    "thinking_tokens", "declared_budget_tokens", "hard_stopped", "completion_tokens", "finish_reason", "difficulty",
)  # fmt: skip


@dataclass
class EvalArguments:
    """Every field is a recipe key of the `eval` stage."""

    test_path: str = field(
        metadata={
            "help": "Test problems: a file with `id`, `question`, `answer` (optional `difficulty`), or with `preset` "
            "any file or dataset name in a preset's format (GSM8K, MATH-500, AIME, AMC)."
        }
    )
    output_dir: str = field(
        metadata={"help": "Folder for completions.jsonl, report.json, report.md and the plots (checked first)."}
    )
    preset: str | None = field(
        default=None,
        metadata={
            "help": "Column mapping of test_path, as in the `problems` stage: gsm8k, math (MATH-500), aime, amc, qwq "
            "(none: the file has `id`, `question`, `answer`)."
        },
    )
    test_split: str = field(default="test", metadata={"help": "Split read when test_path is a dataset name."})
    models: JSONDict = field(
        default_factory=JSONDict,
        metadata={
            "help": "Model name -> path (JSON on the command line). `full_cot` is the uncompressed-trace student; "
            "every other name is a budget student evaluated in every mode."
        },
    )
    truncation_model: str | None = field(
        default=None, metadata={"help": "Student whose thought is force-closed at N (default: the full_cot model)."}
    )
    modes: list[str] = field(
        default_factory=lambda: ["exact", "max", "auto", "unbudgeted"],
        metadata={"help": "Modes evaluated for budget students: exact, max, auto, unbudgeted."},
    )
    limit: int | None = field(default=None, metadata={"help": "Evaluate the first N test problems only."})
    batch_size: int = field(default=128, metadata={"help": "Prompts per generation batch."})
    max_new_tokens: int = field(default=512, metadata={"help": "Most tokens generated per completion."})
    engine: str = field(
        default="auto",
        metadata={"help": "`auto` (vLLM when installed with a GPU, else transformers), `vllm` or `transformers`."},
    )
    device: str = field(default="auto", metadata={"help": "`auto` (a GPU when there is one), `cpu`, `cuda`, ..."})
    dtype: str = field(default="auto", metadata={"help": "Weights dtype for evaluation (auto, bfloat16, float32)."})
    report_to: str = field(default="none", metadata={"help": "`wandb` to log the report and plots, or `none`."})
    wandb_project: str = field(default="cotx-rl", metadata={"help": "W&B project of the eval run."})
    run_name: str | None = field(default=None, metadata={"help": "W&B run name (default: the output folder name)."})

    def __post_init__(self):
        unknown = set(self.modes) - {"exact", "max", "auto", "unbudgeted"}
        if unknown:
            raise StageInputError(f"Unknown eval modes {sorted(unknown)}; choose from exact, max, auto, unbudgeted.")
        if self.engine not in ("auto", "vllm", "transformers"):
            raise StageInputError(f"Unknown engine {self.engine!r}; choose auto, vllm or transformers.")
        if not self.models:
            raise StageInputError("eval needs at least one model in `models` (name -> path).")
        from cotx_rl.problems import PRESETS

        if self.preset is not None and self.preset not in PRESETS:
            raise StageInputError(f"Unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}.")


def score_completions(rows: list[dict], generations: list[Generation], tokenizer, run: dict) -> list[dict]:
    """One completion record per problem of a run (`run`: model, mode, budget_tokens), scored against the gold."""
    correct = correctness_reward([g.text for g in generations], [row["answer"] for row in rows])
    records = []
    for row, generation, score in zip(rows, generations, correct):
        record = run | {"id": row["id"], "question": row["question"], "gold": row["answer"]}
        record |= completion_fields(generation, tokenizer)
        record["correct"] = None if score is None else bool(score)
        # Not correct, and ended by a limit rather than by the student: cut off, not wrong.
        record["cut_off"] = not score and generation.finish_reason in CUT_OFF_REASONS
        record["difficulty"] = row.get("difficulty")
        records.append({column: record[column] for column in COMPLETION_COLUMNS})
    return records


def outcomes_of(records: list[dict]) -> list[Outcome]:
    """Scored records as metric outcomes, each held to its target (the declared budget in auto mode)."""
    outcomes = []
    for record in records:
        if record["correct"] is None:
            continue
        mode, declared = record["mode"], record["declared_budget_tokens"]
        target = declared if mode == "auto" else record["budget_tokens"]
        outcomes.append(
            Outcome(float(record["correct"]), record["thinking_tokens"], target, declared, record["difficulty"])
        )
    return outcomes


def summarize(records: list[dict], kind: str) -> dict:
    """A report cell from a run's records (`kind`: budget, auto or plain), over the scored ones only."""
    scored = [r for r in records if r["correct"] is not None]
    outcomes = outcomes_of(records)
    if kind == "budget":
        summary = budget_summary(outcomes)
    elif kind == "auto":
        summary = auto_summary(outcomes)
    else:
        summary = plain_summary(outcomes)
        summary["by_difficulty"] = {
            k: {"accuracy": v["accuracy"], "mean_thinking_tokens": v["mean_thinking_tokens"]}
            for k, v in auto_summary(outcomes)["by_difficulty"].items()
        }
    cut_off = sum(r["cut_off"] for r in scored)
    wrong = sum(not r["correct"] and not r["cut_off"] for r in scored)
    summary.update(
        # What a completion costs in all (thought, answer, tags), next to its thinking tokens.
        mean_completion_tokens=round(sum(r["completion_tokens"] for r in scored) / len(scored), 4) if scored else None,
        cut_off_rate=round(cut_off / len(scored), 4) if scored else None,
        wrong_rate=round(wrong / len(scored), 4) if scored else None,
        num_scored=len(scored),
        num_unscored=len(records) - len(scored),
    )
    return summary


class Student:
    """One model under evaluation: a [`BudgetedGenerator`] whose runs are kept as completion records."""

    def __init__(self, name: str, path: str, args: EvalArguments, run_args: RunArguments):
        self.name, self.run_args = name, run_args
        self.generator = BudgetedGenerator(
            path, engine=args.engine, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
            answer_tokens=run_args.answer_tokens, device=args.device, dtype=args.dtype, work_dir=args.output_dir,
        )  # fmt: skip
        self.tokenizer = self.generator.tokenizer
        self.records: list[dict] = []

    def run(self, rows, mode: str | None, budget: int | None, limit: ThoughtLimit | None = None, name=None):
        """Completion records of one run (greedy, no hard stop unless `limit`), also kept in `self.records`."""
        name = name or self.name
        prompts = [render_prompt(row["question"], mode, budget if mode != "auto" else None) for row in rows]
        generations = self.generator.complete(
            prompts, limit, desc=f"{name} {mode or ('closed at' if limit else 'unbudgeted')} {budget or ''}"
        )
        run = {"model": name, "mode": mode, "budget_tokens": budget}
        records = score_completions(rows, generations, self.tokenizer, run)
        self.records += records
        return records


def evaluate_budget_student(student: Student, rows, args: EvalArguments) -> dict:
    result = {}
    for mode in ("exact", "max"):
        if mode in args.modes:
            result[mode] = {
                str(budget): summarize(student.run(rows, mode, budget), "budget")
                for budget in student.run_args.budget_grid
            }
    if "auto" in args.modes:
        result["auto"] = summarize(student.run(rows, "auto", None), "auto")
    if "unbudgeted" in args.modes:
        result["unbudgeted"] = summarize(student.run(rows, None, None), "plain")
    return result


def evaluate_truncation(student: Student, rows) -> dict:
    """The student's thought cut at N tokens and closed; reported under `exact` and `max` (same completions)."""
    exact = {}
    for budget in student.run_args.budget_grid:
        limit = ThoughtLimit(budget, student.run_args.answer_tokens)
        exact[str(budget)] = summarize(student.run(rows, None, budget, limit, name="truncation"), "budget")
    return {"exact": exact, "max": dict(exact)}


def run_evaluations(args: EvalArguments, run_args: RunArguments, rows: list[dict]) -> tuple[dict, list[dict]]:
    """The report's `models` section, and every completion record (in run order)."""
    report: dict[str, Any] = {}
    records: list[dict] = []
    truncation_path = args.truncation_model or args.models.get("full_cot")
    for name, path in args.models.items():
        student = Student(name, path, args, run_args)
        if name == "full_cot":
            report[name] = {"unbudgeted": summarize(student.run(rows, None, None), "plain")}
        else:
            report[name] = evaluate_budget_student(student, rows, args)
        if path == truncation_path:
            report["truncation"] = evaluate_truncation(student, rows)
        records += student.records
        del student
    if truncation_path and "truncation" not in report:
        student = Student("truncation", truncation_path, args, run_args)
        report["truncation"] = evaluate_truncation(student, rows)
        records += student.records
    return report, records


def _table(report: dict, grid: list[int], cell) -> list[str]:
    """One row per model and mode, `cell(entry, error_key)` per budget, then auto and unbudgeted."""
    lines = [
        "| model | mode | " + " | ".join(f"N={b}" for b in grid) + " | auto | unbudgeted |",
        "|" + "---|" * (len(grid) + 4),
    ]
    for name, modes in report.items():
        for mode, key in (("exact", "mean_abs_rel_error"), ("max", "in_budget_rate")):
            if mode in modes:
                cells = [cell(modes[mode].get(str(b)), key) for b in grid]
                lines.append(f"| {name} | {mode} | " + " | ".join(cells) + " | - | - |")
        extra = [cell(modes.get("auto"), "mean_abs_rel_error"), cell(modes.get("unbudgeted"), None)]
        if any(c != "-" for c in extra):
            lines.append(
                f"| {name} | auto / none | " + " | ".join("-" for _ in grid) + f" | {extra[0]} | {extra[1]} |"
            )
    return lines


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def markdown_table(report: dict, grid: list[int], num_unscored: int = 0) -> str:
    """Two tables, one row per model and mode: accuracy, mean thinking tokens and budget error per budget; then how
    the incorrect answers split into wrong and cut off."""

    def main_cell(entry: dict | None, error_key: str | None) -> str:
        if not entry:
            return "-"
        tokens = entry["mean_thinking_tokens"]
        text = f"{_percent(entry['accuracy'])} / {'n/a' if tokens is None else f'{tokens:.0f}'}"
        if error_key and entry.get(error_key) is not None:
            text += f" / {_percent(entry[error_key])}"
        return text

    def failure_cell(entry: dict | None, error_key: str | None) -> str:
        return "-" if not entry else f"{_percent(entry.get('wrong_rate'))} / {_percent(entry.get('cut_off_rate'))}"

    lines = [
        "Cells: accuracy / mean thinking tokens / budget error (exact: mean \\|n-N\\|/N; max: in-budget rate; "
        "auto: mean \\|n-declared\\|/declared).",
        "",
        *_table(report, grid, main_cell),
        "",
        "Incorrect answers, split: wrong (the model ended its answer) / cut off (it ran into max_new_tokens, or the "
        "truncation baseline's answer ran into answer_tokens).",
        "",
        *_table(report, grid, failure_cell),
    ]
    if num_unscored:
        lines += ["", f"{num_unscored} problem(s) without a readable gold answer are left out of every rate."]
    return "\n".join(lines) + "\n"


def read_test_rows(args: EvalArguments) -> list[dict]:
    """The test problems, mapped by the preset when there is one: each with an id (unique), a question and a gold
    (which may be null: such a problem is left out of every rate and counted)."""
    if args.preset is None:
        rows = read_rows(args.test_path, "Test problems")
        check_rows(rows, ["id", "question", "answer"], text_columns=["question"], nullable=["answer"])
    else:
        from cotx_rl.problems import read_problems

        rows = read_problems(args.test_path, args.preset, args.test_split, keep_unreadable=True)
        if not rows:
            raise StageInputError(f"No test problems with a question in {args.test_path!r}.")
    check_unique_ids(rows)  # the report and completions.jsonl are keyed by them
    return rows


def main(args: EvalArguments, run_args: RunArguments | None = None) -> dict:
    run_args = run_args or RunArguments()
    rows = read_test_rows(args)
    for path in [*args.models.values(), *([args.truncation_model] if args.truncation_model else [])]:
        check_model_source(path, "model path")
    output_dir = check_writable_output(args.output_dir, "Eval output folder", folder=True)
    rows = rows[: args.limit] if args.limit else rows
    grid = run_args.budget_grid
    models, records = run_evaluations(args, run_args, rows)
    # The correctness reward scores None where a gold cannot be read.
    num_unscored = len({record["id"] for record in records if record["correct"] is None})
    # One run is one model in one mode at one budget; every run answers every problem.
    num_runs = len({(r["model"], r["mode"], r["budget_tokens"]) for r in records})
    report = {
        "models": models, "budget_grid": grid, "num_problems": len(rows), "num_unscored": num_unscored,
        "num_runs": num_runs, "num_completions": len(records),
    }  # fmt: skip
    write_rows(output_dir / "completions.jsonl", records, "Completions file")
    write_json(output_dir / "report.json", report, "Report file")
    table = markdown_table(report["models"], grid, num_unscored)
    (output_dir / "report.md").write_text(table, encoding="utf-8")
    from cotx_rl.plots import save_plots

    plots = save_plots(report, output_dir)
    if args.report_to == "wandb":
        log_to_wandb(args, report, table, plots, records)
    logger.info(
        "Evaluation report in %s: %d completions = %d problems x %d runs (model, mode, budget)\n%s",
        output_dir, len(records), len(rows), num_runs, table,
    )  # fmt: skip
    return report


def log_to_wandb(args: EvalArguments, report: dict, table: str, plots: list[Path], records: list[dict]) -> None:
    import wandb

    configure_wandb(args.report_to, args.output_dir)
    run = wandb.init(
        project=args.wandb_project,
        name=args.run_name or Path(args.output_dir).name,
        dir=args.output_dir,
        job_type="eval",
    )
    flat = {}
    for name, modes in report["models"].items():
        for mode, entry in modes.items():
            for key, value in entry.items():
                if isinstance(value, dict):
                    for metric, number in value.items():
                        if isinstance(number, (int, float)):
                            flat[f"eval/{name}/{mode}/{key}/{metric}"] = number
                elif isinstance(value, (int, float)):
                    flat[f"eval/{name}/{mode}/{key}"] = value
    run.log(flat)
    run.log({f"eval/plots/{p.stem}": wandb.Image(str(p)) for p in plots})
    # Values W&B tables take as they are: strings, numbers, booleans, None.
    data = [[_cell_value(record.get(column)) for column in COMPLETION_COLUMNS] for record in records]
    run.log({"eval/completions": wandb.Table(columns=list(COMPLETION_COLUMNS), data=data)})
    run.summary["report_markdown"] = table
    run.finish()


def _cell_value(value):
    return value if value is None or isinstance(value, (str, int, float, bool)) else str(value)


def make_parser():
    from cotx_rl.config import make_parser

    return make_parser(EvalArguments, RunArguments)


if __name__ == "__main__":
    from cotx_rl.cli import main as cli

    raise SystemExit(cli(["eval", *sys.argv[1:]]))
