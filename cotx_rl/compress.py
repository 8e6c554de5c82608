"""Stage `compress`: kept traces -> budgeted examples, one per budget on the grid.

For each trace and each budget N on the grid the stage picks a mode (in the configured proportions) and asks the
compressors, in order, for a reasoning that fits:

- `exact`: within `exact_tolerance` of N (default 10%: between 0.9N and N thinking tokens);
- `max`: at most `(1 - max_headroom) * N`, so that a student that overshoots its training length a little still
  keeps to N;
- `auto`: the trace's own label, the smallest grid budget whose `exact` compression by `auto_label_compressors`
  passes the checks; at most one `auto` example per trace, since a trace has one label.

Every candidate is checked before it is kept: its thinking tokens (student tokenizer) fit the window, and its
reasoning still leads to the gold answer ([`cotx_rl.steps.leads_to_answer`]; for the embedded domain every operation
of the chain must be carried by the kept steps). Failures are dropped and counted, never kept.
"""

from __future__ import annotations

import logging
import math
import random
import statistics
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from cotx_rl.budget import BudgetSettingError, check_mode_proportions, count_reasoning_tokens
from cotx_rl.compressors import COMPRESSORS, Compressor, RewriteCompressor
from cotx_rl.config import RunArguments
from cotx_rl.io import JSONDict, StageInputError, check_output_path, read_rows, require_columns, write_json, write_rows
from cotx_rl.models import load_tokenizer
from cotx_rl.steps import leads_to_answer
from cotx_rl.teachers.config import TeacherArguments

logger = logging.getLogger(__name__)


@dataclass
class CompressArguments:
    """Every field is a recipe key of the `compress` stage (the teacher keys configure the `rewrite` compressor)."""

    traces_path: str = field(metadata={"help": "Kept traces (the `verify` stage's output, or your own)."})
    output_path: str = field(metadata={"help": "Budgeted examples (.jsonl or .parquet)."})
    stats_path: str | None = field(default=None, metadata={"help": "JSON stats report (default: next to output)."})
    student_tokenizer: str = field(
        default="embedded",
        metadata={"help": "Tokenizer that counts thinking tokens: `embedded`, or a model name or local path."},
    )
    compressors: list[str] = field(
        default_factory=lambda: ["prune", "rewrite"],
        metadata={"help": f"Compressors tried in order for exact and max examples: {', '.join(COMPRESSORS)}."},
    )
    auto_label_compressors: list[str] = field(
        default_factory=lambda: ["prune"],
        metadata={
            "help": "Compressors that label auto examples. Keep to ones that keep every step (prune): a rewrite "
            "that merges steps fits the smallest budget for any problem and would make every label the same."
        },
    )
    mode_proportions: JSONDict = field(
        default_factory=lambda: JSONDict({"exact": 0.4, "max": 0.35, "auto": 0.25}),
        metadata={"help": "Share of examples per mode (JSON on the command line); auto at most 1/len(budget_grid)."},
    )
    exact_tolerance: float = field(default=0.1, metadata={"help": "Exact examples lie within this share of N."})
    max_headroom: float = field(
        default=0.15, metadata={"help": "Max examples use at most (1 - max_headroom) * N thinking tokens."}
    )
    rewrite_max_attempts: int = field(default=3, metadata={"help": "Rewrite tries per example before it is dropped."})
    mode_seed: int = field(default=0, metadata={"help": "Seed of the mode draws (the teacher has its own `seed`)."})

    def __post_init__(self):
        for name in [*self.compressors, *self.auto_label_compressors]:
            if name not in COMPRESSORS:
                raise StageInputError(f"Unknown compressor {name!r}; choose from {', '.join(COMPRESSORS)}.")
        try:
            self.mode_proportions = JSONDict(check_mode_proportions(self.mode_proportions))
        except BudgetSettingError as error:
            raise StageInputError(str(error)) from error
        if not 0 <= self.exact_tolerance < 1 or not 0 <= self.max_headroom < 1:
            raise StageInputError(
                f"exact_tolerance ({self.exact_tolerance}) and max_headroom ({self.max_headroom}) must be in [0, 1)."
            )


@dataclass
class Window:
    """Thinking tokens an example may have."""

    low: int
    high: int

    @classmethod
    def exact(cls, budget: int, tolerance: float) -> Window:
        return cls(math.ceil(budget * (1 - tolerance)), budget)

    @classmethod
    def max(cls, budget: int, headroom: float) -> Window:
        return cls(0, math.floor(budget * (1 - headroom)))


class TraceCompressor:
    """Compresses one trace to windows, trying compressors in order and checking every result."""

    def __init__(self, compressors: dict[str, Compressor], tokenizer: Any):
        self.compressors, self.tokenizer = compressors, tokenizer

    def first_passing(self, row: dict, names: list[str], window: Window, failures: Counter) -> tuple | None:
        """`(reasoning, tokens, compressor)` from the first compressor whose result passes, or None."""
        for name in names:
            reasoning = self.compressors[name].compress(row, row["reasoning"], window.high, window.low)
            reason = self.failure(row, reasoning, window)
            if reason is None:
                return reasoning, count_reasoning_tokens(reasoning, self.tokenizer), name
            failures[f"{name}:{reason}"] += 1
        return None

    def failure(self, row: dict, reasoning: str | None, window: Window) -> str | None:
        if reasoning is None or not reasoning.strip():
            return "no_fit"
        tokens = count_reasoning_tokens(reasoning, self.tokenizer)
        if tokens > window.high:
            return "over_budget"
        if tokens < window.low:
            return "under_budget"
        if not leads_to_answer(reasoning, row["answer"], row["question"]):
            return "lost_answer"
        return None


def plan_modes(grid: list[int], proportions: dict[str, float], rng: random.Random) -> list[tuple[str, int]]:
    """`(mode, budget)` slots for one trace: one per grid budget, at most one of them `auto`."""
    total = sum(proportions.values())
    p_auto = min(1.0, proportions.get("auto", 0.0) / total * len(grid))
    slots = list(grid)
    rng.shuffle(slots)
    plan = []
    if rng.random() < p_auto:
        plan.append(("auto", slots.pop()))
    exact, maximum = proportions.get("exact", 0.0), proportions.get("max", 0.0)
    for budget in slots:
        if exact + maximum == 0:
            break
        plan.append(("exact" if rng.random() < exact / (exact + maximum) else "max", budget))
    return plan


def compress_trace(
    row: dict, args: CompressArguments, grid: list[int], worker: TraceCompressor, failures: Counter
) -> list[dict]:
    """The budgeted examples of one trace."""
    rng = random.Random(f"{args.mode_seed}-{row['id']}")
    plan = plan_modes(grid, args.mode_proportions, rng)
    base = {k: v for k, v in row.items() if k != "reasoning"}
    base["original_reasoning_tokens"] = count_reasoning_tokens(row["reasoning"], worker.tokenizer)
    examples = []
    for mode, budget in sorted(plan, key=lambda slot: slot[1]):
        if mode == "auto":
            found, budget = auto_label(row, args, grid, worker, failures)
        elif mode == "exact":
            found = worker.first_passing(row, args.compressors, Window.exact(budget, args.exact_tolerance), failures)
        else:
            found = worker.first_passing(row, args.compressors, Window.max(budget, args.max_headroom), failures)
        if found is None:
            failures[f"dropped:{mode}"] += 1
            continue
        reasoning, tokens, compressor = found
        examples.append(
            {**base, "budget_mode": mode, "budget_tokens": budget, "reasoning": reasoning,
             "reasoning_tokens": tokens, "compressor": compressor}
        )  # fmt: skip
    return examples


def auto_label(row: dict, args: CompressArguments, grid: list[int], worker: TraceCompressor, failures: Counter):
    """The smallest grid budget whose exact compression passes, with that compression (or None, None)."""
    for budget in grid:
        window = Window.exact(budget, args.exact_tolerance)
        found = worker.first_passing(row, args.auto_label_compressors, window, Counter())
        if found is not None:
            return found, budget
    failures["auto:no_label"] += 1
    return None, None


def build_compressors(args: CompressArguments, teacher_args: TeacherArguments, tokenizer) -> dict[str, Compressor]:
    names = set(args.compressors) | set(args.auto_label_compressors)
    built = {}
    for name in names:
        if name == "rewrite":
            from cotx_rl.teachers import build_teacher

            teacher = build_teacher(teacher_args)
            teacher.check()
            built[name] = RewriteCompressor(tokenizer, teacher, max_attempts=args.rewrite_max_attempts)
        else:
            built[name] = COMPRESSORS[name](tokenizer)
    return built


def summarize(traces: list[dict], examples: list[dict], failures: Counter, grid: list[int]) -> dict:
    """The stats report: kept and dropped, thinking tokens per budget and compressor, compression ratios."""
    groups = defaultdict(list)
    for example in examples:
        groups[(example["budget_mode"], example["budget_tokens"], example["compressor"])].append(example)
    tokens = {
        f"{mode}/{budget}/{name}": {
            "examples": len(rows),
            "mean_tokens": round(statistics.mean(r["reasoning_tokens"] for r in rows), 1),
            "min_tokens": min(r["reasoning_tokens"] for r in rows),
            "max_tokens": max(r["reasoning_tokens"] for r in rows),
            "compression_ratio": round(
                statistics.mean(r["reasoning_tokens"] / r["original_reasoning_tokens"] for r in rows), 3
            ),
        }
        for (mode, budget, name), rows in sorted(groups.items())
    }
    ratios = defaultdict(list)
    for example in examples:
        ratios[example["compressor"]].append(example["reasoning_tokens"] / example["original_reasoning_tokens"])
    labels = defaultdict(list)
    for example in examples:
        if example["budget_mode"] == "auto" and example.get("difficulty") is not None:
            labels[example["difficulty"]].append(example["budget_tokens"])
    return {
        "traces": len(traces),
        "examples": len(examples),
        "examples_per_mode": dict(Counter(e["budget_mode"] for e in examples)),
        "dropped": dict(sorted(failures.items())),
        "budget_grid": grid,
        "thinking_tokens": tokens,
        "compression_ratio": {name: round(statistics.mean(v), 3) for name, v in sorted(ratios.items())},
        "auto_label_by_difficulty": {str(k): round(statistics.mean(v), 1) for k, v in sorted(labels.items())},
    }


def format_table(stats: dict) -> str:
    header = f"{'mode/budget/compressor':<28}{'examples':>9}{'mean':>8}{'min':>6}{'max':>6}{'ratio':>8}"
    lines = [header, "-" * len(header)]
    for key, row in stats["thinking_tokens"].items():
        lines.append(
            f"{key:<28}{row['examples']:>9}{row['mean_tokens']:>8}{row['min_tokens']:>6}{row['max_tokens']:>6}"
            f"{row['compression_ratio']:>8}"
        )
    lines.append(f"traces {stats['traces']}, examples {stats['examples']} {stats['examples_per_mode']}")
    lines.append(f"dropped {stats['dropped']}")
    lines.append(
        f"compression ratio {stats['compression_ratio']}; auto label by difficulty {stats['auto_label_by_difficulty']}"
    )
    return "\n".join(lines)


def main(
    args: CompressArguments, teacher_args: TeacherArguments | None = None, run_args: RunArguments | None = None
) -> dict:
    from tqdm.auto import tqdm

    run_args = run_args or RunArguments()
    output = check_output_path(args.output_path)
    traces = read_rows(args.traces_path, "Traces file")
    require_columns(traces, ["id", "question", "answer", "reasoning"], f"Traces file {args.traces_path!r}")
    tokenizer = load_tokenizer(args.student_tokenizer)
    worker = TraceCompressor(build_compressors(args, teacher_args or TeacherArguments(), tokenizer), tokenizer)
    failures: Counter = Counter()
    examples = []
    for row in tqdm(traces, desc="compress", unit="trace"):
        examples.extend(compress_trace(row, args, run_args.budget_grid, worker, failures))
    if not examples:
        raise StageInputError(f"No example of {args.traces_path!r} passed the checks: {dict(failures)}.")
    write_rows(output, examples)
    stats = summarize(traces, examples, failures, run_args.budget_grid)
    write_json(args.stats_path or output.with_name(output.stem + "_stats.json"), stats)
    logger.info("Compression report for %s\n%s", output, format_table(stats))
    return stats


def make_parser():
    from cotx_rl.config import make_parser

    return make_parser(CompressArguments, TeacherArguments, RunArguments)


if __name__ == "__main__":
    from cotx_rl.cli import main as cli

    raise SystemExit(cli(["compress", *sys.argv[1:]]))
