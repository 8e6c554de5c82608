"""Stage `eval`: accuracy and budget fidelity of every model, for every mode and budget, with baselines.

Models are named in the recipe: `full_cot` (fine-tuned on uncompressed traces, no budget; evaluated without a
directive), `truncation` (the full-CoT student's thought force-closed at N tokens), and the budget students (`sft`,
`grpo`, or any other name), evaluated in `exact` and `max` mode at every grid budget, in `auto` mode, and without a
directive. Greedy decoding throughout.

Outputs in `output_dir`: `report.json` (schema in the README), `report.md` (the table), and PNG plots: accuracy
against mean thinking tokens (the Pareto picture), requested against actual thinking tokens, and thinking tokens by
difficulty in `auto` mode. All are also logged to W&B when `report_to: wandb`.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cotx_rl.budget import THINK_END, THINK_START, count_thinking_tokens, parse_completion, render_prompt
from cotx_rl.config import RunArguments
from cotx_rl.io import JSONDict, StageInputError, read_rows, require_columns, write_json
from cotx_rl.models import check_model_source, is_adapter, load_for_inference, load_tokenizer
from cotx_rl.tracking import configure_wandb
from rewards.correctness import correctness_reward
from rewards.metrics import Outcome, auto_summary, budget_summary, plain_summary

logger = logging.getLogger(__name__)
BUDGET_MODELS_EXCLUDED = ("full_cot", "truncation")


@dataclass
class EvalArguments:
    """Every field is a recipe key of the `eval` stage."""

    test_path: str = field(metadata={"help": "Test problems (`id`, `question`, `answer`, optional `difficulty`)."})
    output_dir: str = field(metadata={"help": "Folder for report.json, report.md and the plots."})
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


def thinking_tokens_used(text: str, ids: list[int], tokenizer) -> int:
    """Thinking tokens of a completion, also when it is malformed.

    A well-formed completion counts what [`count_thinking_tokens`] counts; otherwise the thought runs from the first
    `<think>` to the first `</think>` after it, or to the end when it never closes.
    """
    counted = count_thinking_tokens(text, tokenizer, ids)
    if counted is not None:
        return counted
    start_id, end_id = tokenizer.convert_tokens_to_ids([THINK_START, THINK_END])
    if start_id not in ids:
        return 0
    start = ids.index(start_id)
    end = ids.index(end_id, start) if end_id in ids[start:] else len(ids)
    return end - start - 1


def score_completions(rows, texts, ids, tokenizer, budget_tokens: int | None, mode: str | None) -> list[Outcome]:
    correct = correctness_reward(texts, [row["answer"] for row in rows])
    outcomes = []
    for row, text, token_ids, score in zip(rows, texts, ids, correct):
        declared = parse_completion(text).declared_budget_tokens
        target = declared if mode == "auto" else budget_tokens
        outcomes.append(
            Outcome(
                score or 0.0, thinking_tokens_used(text, token_ids, tokenizer), target, declared, row.get("difficulty")
            )
        )
    return outcomes


class Student:
    """One model under evaluation: its tokenizer and a greedy `complete(user_texts, close_thought_at, desc)`."""

    def __init__(self, path: str, args: EvalArguments, run_args: RunArguments):
        self.args, self.run_args = args, run_args
        if use_vllm(args.engine):
            from cotx_rl.generation import VLLMGenerator

            self.tokenizer = load_tokenizer(path)
            self.vllm = VLLMGenerator(merged_model_path(path, args.output_dir), dtype=args.dtype)
        else:
            self.model, self.tokenizer = load_for_inference(path, args.device, args.dtype)
            self.vllm = None

    def complete(self, user_texts: list[str], close_thought_at: int | None = None, desc: str = "generate"):
        answer_tokens = self.run_args.answer_tokens if close_thought_at is not None else None
        if self.vllm is not None:
            return self.vllm.generate(
                self.tokenizer, user_texts, self.args.max_new_tokens, close_thought_at, answer_tokens
            )
        from cotx_rl.generation import generate

        return generate(
            self.model, self.tokenizer, user_texts, self.args.max_new_tokens, self.args.batch_size,
            close_thought_at=close_thought_at, desc=desc, max_answer_tokens=answer_tokens,
        )  # fmt: skip

    def outcomes(self, rows, mode: str | None, budget: int | None, close_thought_at: int | None = None, desc=""):
        prompts = [render_prompt(row["question"], mode, budget if mode != "auto" else None) for row in rows]
        texts, ids = self.complete(prompts, close_thought_at, desc)
        return score_completions(rows, texts, ids, self.tokenizer, budget, mode)


def use_vllm(engine: str) -> bool:
    from cotx_rl.generation import vllm_usable

    if engine == "vllm" and not vllm_usable():
        raise StageInputError("engine: vllm needs vLLM installed and a GPU; use engine: transformers here.")
    return engine == "vllm" or (engine == "auto" and vllm_usable())


def merged_model_path(path: str, output_dir: str) -> str:
    """vLLM loads full models: a LoRA adapter is merged onto its base and saved next to the report first."""
    if not is_adapter(path):
        return path
    model, tokenizer = load_for_inference(path, "cpu")
    merged = Path(output_dir) / "merged" / Path(path).name
    model.save_pretrained(merged)
    tokenizer.save_pretrained(merged)
    return str(merged)


def evaluate_budget_student(student: Student, rows, args: EvalArguments, name: str) -> dict:
    result = {}
    for mode in ("exact", "max"):
        if mode in args.modes:
            result[mode] = {
                str(budget): budget_summary(student.outcomes(rows, mode, budget, desc=f"{name} {mode} {budget}"))
                for budget in student.run_args.budget_grid
            }
    if "auto" in args.modes:
        result["auto"] = auto_summary(student.outcomes(rows, "auto", None, desc=f"{name} auto"))
    if "unbudgeted" in args.modes:
        result["unbudgeted"] = evaluate_unbudgeted(student, rows, name)
    return result


def evaluate_unbudgeted(student: Student, rows, name: str) -> dict:
    outcomes = student.outcomes(rows, None, None, desc=f"{name} unbudgeted")
    summary = plain_summary(outcomes)
    summary["by_difficulty"] = {
        k: {"accuracy": v["accuracy"], "mean_thinking_tokens": v["mean_thinking_tokens"]}
        for k, v in auto_summary(outcomes)["by_difficulty"].items()
    }
    return summary


def evaluate_truncation(student: Student, rows, args: EvalArguments) -> dict:
    """The student's thought cut at N tokens and closed; reported under `exact` and `max` (same completions)."""
    exact = {}
    for budget in student.run_args.budget_grid:
        outcomes = student.outcomes(rows, None, budget, close_thought_at=budget, desc=f"truncation {budget}")
        exact[str(budget)] = budget_summary(outcomes)
    return {"exact": exact, "max": dict(exact)}


def run_evaluations(args: EvalArguments, run_args: RunArguments, rows: list[dict]) -> dict:
    report: dict[str, Any] = {}
    truncation_path = args.truncation_model or args.models.get("full_cot")
    for name, path in args.models.items():
        student = Student(path, args, run_args)
        if name == "full_cot":
            report[name] = {"unbudgeted": evaluate_unbudgeted(student, rows, name)}
        else:
            report[name] = evaluate_budget_student(student, rows, args, name)
        if path == truncation_path:
            report["truncation"] = evaluate_truncation(student, rows, args)
        del student
    if truncation_path and "truncation" not in report:
        report["truncation"] = evaluate_truncation(Student(truncation_path, args, run_args), rows, args)
    return report


def markdown_table(report: dict, grid: list[int]) -> str:
    """One row per model and mode: accuracy (and mean thinking tokens) per budget, then auto and unbudgeted."""

    def cell(entry: dict | None, error_key: str | None = None) -> str:
        if not entry:
            return "-"
        text = f"{100 * entry['accuracy']:.1f}% / {entry['mean_thinking_tokens']:.0f}"
        if error_key and entry.get(error_key) is not None:
            text += f" / {100 * entry[error_key]:.1f}%"
        return text

    header = "| model | mode | " + " | ".join(f"N={b}" for b in grid) + " | auto | unbudgeted |"
    lines = [
        "Cells: accuracy / mean thinking tokens / budget error (exact: mean \\|n-N\\|/N; max: in-budget rate; "
        "auto: mean \\|n-declared\\|/declared).",
        "",
        header,
        "|" + "---|" * (len(grid) + 4),
    ]
    for name, modes in report.items():
        for mode, key in (("exact", "mean_abs_rel_error"), ("max", "in_budget_rate")):
            if mode in modes:
                cells = [cell(modes[mode].get(str(b)), key) for b in grid]
                lines.append(f"| {name} | {mode} | " + " | ".join(cells) + " | - | - |")
        extra = [cell(modes.get("auto"), "mean_abs_rel_error"), cell(modes.get("unbudgeted"))]
        if any(c != "-" for c in extra):
            lines.append(
                f"| {name} | auto / none | " + " | ".join("-" for _ in grid) + f" | {extra[0]} | {extra[1]} |"
            )
    return "\n".join(lines) + "\n"


def main(args: EvalArguments, run_args: RunArguments | None = None) -> dict:
    run_args = run_args or RunArguments()
    rows = read_rows(args.test_path, "Test problems")
    require_columns(rows, ["id", "question", "answer"], f"Test problems {args.test_path!r}")
    for path in [*args.models.values(), *([args.truncation_model] if args.truncation_model else [])]:
        check_model_source(path, "model path")
    rows = rows[: args.limit] if args.limit else rows
    grid = run_args.budget_grid
    report = {"models": run_evaluations(args, run_args, rows), "budget_grid": grid, "num_problems": len(rows)}
    output_dir = Path(args.output_dir)
    write_json(output_dir / "report.json", report)
    table = markdown_table(report["models"], grid)
    (output_dir / "report.md").write_text(table, encoding="utf-8")
    from cotx_rl.plots import save_plots

    plots = save_plots(report, output_dir)
    if args.report_to == "wandb":
        log_to_wandb(args, report, table, plots)
    logger.info("Evaluation report (%d problems) in %s\n%s", len(rows), output_dir, table)
    return report


def log_to_wandb(args: EvalArguments, report: dict, table: str, plots: list[Path]) -> None:
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
    run.summary["report_markdown"] = table
    run.finish()


def make_parser():
    from cotx_rl.config import make_parser

    return make_parser(EvalArguments, RunArguments)


if __name__ == "__main__":
    from cotx_rl.cli import main as cli

    raise SystemExit(cli(["eval", *sys.argv[1:]]))
