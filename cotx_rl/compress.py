"""Stage `compress`: traces -> budgeted examples, one per budget on the grid.

```
cotx-rl compress --config recipes/qwen2.5-1.5b/compress_real.yaml
```

The traces file is read as it comes ([`cotx_rl.trace_rows`]): the `verify` stage's output, or a teacher's own file
(`problem`/`gold_answer`/`thinking`/`answer_text`/`complete`, a raw `<think>` completion, ...); unfinished thoughts and
null golds are dropped and counted. Every length is in thinking tokens of the student's tokenizer
([`cotx_rl.budget.count_reasoning_tokens`]).

**Slots.** For each trace and each budget N on the grid the stage draws a mode (in the configured proportions), then
plans knowing the trace's own length L:

- `exact`: within `exact_tolerance` of N (default 10%: between 0.9N and N). No compressor lengthens a trace, so an
  exact slot whose window starts above L cannot be met. By default (`exact_above_trace: max`) it becomes a `max` slot:
  the trace already fits N, and a student asked to think for at most N should see it as it is. It is counted in the
  report under `replanned`; with `exact_above_trace: skip` it is dropped before any work and counted under
  `exact:above_trace_length`.
- `max`: at most `(1 - max_headroom) * N`, so that a student that overshoots its training length a little still
  keeps to N. A trace that fits is kept as it is.
- `auto`: the trace's own label, the smallest grid budget whose `exact` window the `auto_label_compressors` meet with
  a passing result; a trace no longer than N fits N as it is, so a trace shorter than the smallest budget gets the
  smallest budget. The label is computed for every trace (the report gives the share labelled and the mean label per
  difficulty); at most one `auto` example per trace is emitted, in the configured proportion.

**Candidates.** The trace as it is when it fits the window (compressor `original`), then each compressor in order.
Every candidate is checked before it is kept: its thinking tokens fit the window, and its reasoning still leads to
the gold answer ([`cotx_rl.steps.leads_to_answer`]: for the embedded domain every operation of the chain must be
carried by the kept steps; elsewhere the project's verifier must read the gold answer in it). Failures are dropped and
counted by compressor and reason, never kept.

**Rewrite.** Slots that no compressor before `rewrite` met are rewritten last, `rewrite_batch_size` requests per call
of the teacher's batch interface. Each finished batch is appended to `<output stem>.rewrites.jsonl`; a rerun (after a
kill, say) takes what is there and asks only for the rest. Delete that file to rewrite again. A request that fails
(the openai backend: a server error or timeout after its retries, or a refused request, which is sent as it was) is
sent again in the slot's next attempt (`rewrite_max_attempts` in all); a slot whose last request failed is counted as
`rewrite:request_failed`, falls back to the compressors listed after `rewrite`, and is asked for again by a rerun. A
rejected key (401/403) stops the stage.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import statistics
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cotx_rl.budget import BudgetSettingError, check_mode_proportions, count_reasoning_tokens
from cotx_rl.compressors import COMPRESSORS, DEFAULT_KEEP_SCORE, Compressor, PruneCompressor, RewriteCompressor
from cotx_rl.config import RunArguments
from cotx_rl.io import (
    JSONDict,
    StageInputError,
    append_rows,
    check_output_path,
    check_unique_ids,
    check_writable_output,
    read_rows,
    repair_jsonl_tail,
    write_json,
    write_rows,
)
from cotx_rl.models import load_tokenizer
from cotx_rl.steps import leads_to_answer
from cotx_rl.teachers.config import TeacherArguments
from cotx_rl.trace_rows import TraceColumnArguments, load_traces, trace_key

logger = logging.getLogger(__name__)
EXACT_ABOVE_TRACE = ("max", "skip")
# The failure of a rewrite slot whose every request failed (server errors, timeouts): a rerun asks for it again.
REQUEST_FAILED = "rewrite:request_failed"


@dataclass
class CompressArguments:
    """Every field is a recipe key of the `compress` stage (the teacher keys configure the `rewrite` compressor)."""

    traces_path: str = field(
        metadata={"help": "Traces (the `verify` stage's output, or your own; see the trace column keys)."}
    )
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
            "help": "Compressors that label auto examples (not rewrite). Keep to ones that keep every step (prune): "
            "a rewrite that merges steps fits the smallest budget for any problem and would make every label the same."
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
    exact_above_trace: str = field(
        default="max",
        metadata={
            "help": "An exact slot whose window starts above the trace's own length cannot be met: `max` makes it a "
            "max slot (the trace fits as it is), `skip` drops it before any work. Both are counted in the report."
        },
    )
    prune_keep_score: float = field(
        default=DEFAULT_KEEP_SCORE,
        metadata={
            "help": "Real (non-embedded) traces: segments scoring at least this are the derivation, which prune never "
            "drops (reflection, re-checks, repetition and re-verification score lower). Lower compresses harder."
        },
    )
    rewrite_max_attempts: int = field(default=3, metadata={"help": "Rewrite tries per example before it is dropped."})
    rewrite_batch_size: int = field(
        default=64,
        metadata={
            "help": "Rewrite requests per teacher call; each finished batch is appended to <output stem>.rewrites.jsonl, "
            "so that a killed run resumes after it."
        },
    )
    mode_seed: int = field(default=0, metadata={"help": "Seed of the mode draws (the teacher has its own `seed`)."})

    def __post_init__(self):
        for name in [*self.compressors, *self.auto_label_compressors]:
            if name not in COMPRESSORS:
                raise StageInputError(f"Unknown compressor {name!r}; choose from {', '.join(COMPRESSORS)}.")
        if "rewrite" in self.auto_label_compressors:
            raise StageInputError(
                "auto_label_compressors cannot hold rewrite: a rewrite that merges steps fits the smallest budget for "
                "any problem, so every label would be the same. Use prune."
            )
        try:
            self.mode_proportions = JSONDict(check_mode_proportions(self.mode_proportions))
        except BudgetSettingError as error:
            raise StageInputError(str(error)) from error
        if not 0 <= self.exact_tolerance < 1 or not 0 <= self.max_headroom < 1:
            raise StageInputError(
                f"exact_tolerance ({self.exact_tolerance}) and max_headroom ({self.max_headroom}) must be in [0, 1)."
            )
        if self.exact_above_trace not in EXACT_ABOVE_TRACE:
            raise StageInputError(
                f"exact_above_trace must be one of {', '.join(EXACT_ABOVE_TRACE)}, got {self.exact_above_trace!r}."
            )
        if self.rewrite_batch_size <= 0 or self.rewrite_max_attempts <= 0:
            raise StageInputError(
                f"rewrite_batch_size ({self.rewrite_batch_size}) and rewrite_max_attempts "
                f"({self.rewrite_max_attempts}) must be positive."
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
    """Compresses one trace to windows: the trace as it is when it fits, then compressors in order; every result is
    checked. Results are remembered per trace (`memo`), so the auto label and an exact slot of the same window share
    one compression."""

    def __init__(self, compressors: dict[str, Compressor], tokenizer: Any):
        self.compressors, self.tokenizer = compressors, tokenizer

    def tokens(self, reasoning: str) -> int:
        return count_reasoning_tokens(reasoning, self.tokenizer)

    def first_passing(
        self,
        row: dict,
        names: list[str],
        window: Window,
        failures: Counter,
        length: int,
        memo: dict,
        as_is: bool = True,
    ) -> tuple | None:
        """`(reasoning, tokens, compressor)`: the trace itself (`original`) when it fits the window (and `as_is`),
        else the first compressor's result that passes, or None. Failures are counted as `<compressor>:<reason>`."""
        key = (tuple(names), window.low, window.high, as_is)
        if key not in memo:
            counted: list[str] = []
            memo[key] = (self._first_passing(row, names, window, counted, length, memo, as_is), counted)
        found, counted = memo[key]
        failures.update(counted)
        return found

    def _first_passing(self, row, names, window, counted, length, memo, as_is):
        if as_is and window.low <= length <= window.high:
            if "original" not in memo:
                memo["original"] = self.failure(row, row["reasoning"], window)
            if memo["original"] is None:
                return row["reasoning"], length, "original"
            counted.append(f"original:{memo['original']}")
        for name in names:
            compressor = self.compressors[name]
            reasoning = compressor.compress(row, row["reasoning"], window.high, window.low)
            reason = self.failure(row, reasoning, window, compressor)
            if reason is None:
                return reasoning, self.tokens(reasoning), name
            counted.append(f"{name}:{reason}")
        return None

    def failure(self, row: dict, reasoning: str | None, window: Window, compressor: Compressor | None = None):
        """Why a candidate fails its window, or None when it passes."""
        if reasoning is None or not reasoning.strip():
            return compressor.failure_reason if compressor is not None else "no_fit"
        tokens = self.tokens(reasoning)
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


@dataclass
class PendingRewrite:
    """An exact or max slot that the compressors before `rewrite` did not meet."""

    index: int
    position: int  # among the trace's slots, in budget order: where its example goes in the output
    row: dict
    mode: str
    budget: int
    window: Window
    length: int  # the trace's own thinking tokens
    then: list[str]  # in-process compressors listed after rewrite, tried when it fails
    failed_before: list[str]  # why the compressors before rewrite failed (already counted)

    def key(self, teacher: str) -> str:
        """Names the request across runs: the slot, and what the rewrite depends on (trace, gold, window, teacher)."""
        digest = hashlib.sha1(
            "\0".join([self.row["reasoning"], self.row["answer"], self.row["question"], teacher]).encode()
        ).hexdigest()[:16]
        return f"{self.row['id']}|{self.mode}|{self.budget}|{self.window.low}-{self.window.high}|{digest}"


class SlotReport:
    """Exact and max slots by how their budget compares with the trace's own length, kept or dropped and why."""

    def __init__(self):
        self.classes: dict[str, Counter] = defaultdict(Counter)
        self.labels: list[tuple[Any, int | None]] = []

    @staticmethod
    def cls(budget: int, length: int) -> str:
        return "budget_at_least_half_trace" if 2 * budget >= length else "budget_below_half_trace"

    def planned(self, budget: int, length: int) -> None:
        self.classes[self.cls(budget, length)]["planned"] += 1

    def kept(self, budget: int, length: int) -> None:
        self.classes[self.cls(budget, length)]["kept"] += 1

    def dropped(self, budget: int, length: int, reasons: list[str]) -> None:
        counter = self.classes[self.cls(budget, length)]
        for reason in reasons or ["no_compressor"]:
            counter[f"dropped:{reason}"] += 1

    def summary(self, grid: list[int]) -> dict:
        slots = {}
        for name in ("budget_at_least_half_trace", "budget_below_half_trace"):
            counter = self.classes[name]
            planned, kept = counter["planned"], counter["kept"]
            slots[name] = {
                "planned": planned,
                "kept": kept,
                "kept_share": round(kept / planned, 3) if planned else None,
                "failures": {k.removeprefix("dropped:"): v for k, v in sorted(counter.items()) if ":" in k},
            }
        by_difficulty = defaultdict(list)
        for difficulty, label in self.labels:
            if label is not None and difficulty is not None:
                by_difficulty[difficulty].append(label)
        labelled = [label for _, label in self.labels if label is not None]
        auto = {
            "traces": len(self.labels),
            "labelled": len(labelled),
            "labelled_share": round(len(labelled) / len(self.labels), 3) if self.labels else None,
            "per_budget": {str(b): labelled.count(b) for b in grid},
            "mean_by_difficulty": {
                str(k): round(statistics.mean(v), 1) for k, v in sorted(by_difficulty.items(), key=_difficulty_key)
            },
            "labelled_by_difficulty": {str(k): len(v) for k, v in sorted(by_difficulty.items(), key=_difficulty_key)},
        }
        return {"slots": slots, "auto_labels": auto}


def _difficulty_key(item):
    key = item[0]
    return (0, key, "") if isinstance(key, (int, float)) else (1, 0, str(key))


def slot_window(mode: str, budget: int, args: CompressArguments) -> Window:
    return Window.exact(budget, args.exact_tolerance) if mode == "exact" else Window.max(budget, args.max_headroom)


def make_example(base: dict, mode: str, budget: int, found: tuple) -> dict:
    reasoning, tokens, compressor = found
    return {**base, "budget_mode": mode, "budget_tokens": budget, "reasoning": reasoning,
            "reasoning_tokens": tokens, "compressor": compressor}  # fmt: skip


def compress_trace(
    index: int,
    row: dict,
    args: CompressArguments,
    grid: list[int],
    worker: TraceCompressor,
    failures: Counter,
    report: SlotReport,
) -> tuple[list[tuple[int, dict]], list[PendingRewrite]]:
    """The budgeted examples of one trace (with their position among its slots), and the slots left for `rewrite`."""
    rng = random.Random(f"{args.mode_seed}-{row['id']}")
    plan = plan_modes(grid, args.mode_proportions, rng)
    length = worker.tokens(row["reasoning"])
    base = {k: v for k, v in row.items() if k != "reasoning"}
    base["original_reasoning_tokens"] = length
    memo: dict = {}
    found_auto, label = auto_label(row, args, grid, worker, length, memo)
    report.labels.append((row.get("difficulty"), label))
    names = list(args.compressors)
    split = names.index("rewrite") if "rewrite" in names else len(names)
    before, after = names[:split], names[split + 1 :]
    examples, pending = [], []
    for position, (mode, budget) in enumerate(sorted(plan, key=lambda slot: slot[1])):
        if mode == "auto":
            if found_auto is None:
                failures["auto:no_label"] += 1
                failures["dropped:auto"] += 1
            else:
                examples.append((position, make_example(base, "auto", label, found_auto)))
            continue
        window = slot_window(mode, budget, args)
        if mode == "exact" and window.low > length:
            if args.exact_above_trace == "skip":
                failures["exact:above_trace_length"] += 1
                report.planned(budget, length)
                report.dropped(budget, length, ["exact:above_trace_length"])
                continue
            failures["replanned:exact->max:above_trace_length"] += 1
            mode, window = "max", slot_window("max", budget, args)
        report.planned(budget, length)
        counted: Counter = Counter()
        found = worker.first_passing(row, before, window, counted, length, memo)
        failures.update(counted)
        if found is not None:
            examples.append((position, make_example(base, mode, budget, found)))
            report.kept(budget, length)
        elif split < len(names):
            pending.append(PendingRewrite(index, position, row, mode, budget, window, length, after, list(counted)))
        else:
            failures[f"dropped:{mode}"] += 1
            report.dropped(budget, length, list(counted))
    return examples, pending


def auto_label(row: dict, args: CompressArguments, grid: list[int], worker: TraceCompressor, length: int, memo: dict):
    """`(found, budget)`: the smallest grid budget whose exact window is met, with its example, or (None, None).

    A trace no longer than a budget fits it as it is, so a trace shorter than the smallest budget gets that budget.
    """
    for budget in grid:
        window = Window.exact(budget, args.exact_tolerance)
        if length < window.low:
            window = Window(length, budget)  # the trace itself, shorter than the window: it fits the budget
        found = worker.first_passing(row, args.auto_label_compressors, window, Counter(), length, memo)
        if found is not None:
            return found, budget
    return None, None


def run_rewrites(
    pending: list[PendingRewrite],
    args: CompressArguments,
    worker: TraceCompressor,
    failures: Counter,
    report: SlotReport,
    sidecar: Path,
) -> dict[int, list[tuple[int, dict]]]:
    """Rewrite the pending slots in batches, appending each batch's results to `sidecar`; examples by trace index.

    Slots already in `sidecar` (from an earlier, killed run) are taken from it, with the drops they counted.
    """
    from tqdm.auto import tqdm

    rewrite: RewriteCompressor = worker.compressors["rewrite"]
    teacher = rewrite.teacher.label
    repair_jsonl_tail(sidecar)
    done = {}
    if sidecar.exists() and sidecar.stat().st_size:
        # A slot whose last request failed is asked for again: its record does not count as done.
        done = {
            record["key"]: record
            for record in read_rows(sidecar, "Rewrite results file")
            if REQUEST_FAILED not in record["failures"]
        }
    examples: dict[int, list[tuple[int, dict]]] = defaultdict(list)
    todo = []
    for slot in pending:
        record = done.get(slot.key(teacher))
        if record is None:
            todo.append(slot)
        else:
            _settle(slot, record, examples, failures, report)
    logger.info(
        "rewrite: %d slots, %d already in %s, %d to ask for.",
        len(pending),
        len(pending) - len(todo),
        sidecar,
        len(todo),
    )
    unanswered = 0
    with tqdm(total=len(todo), desc="rewrite", unit="slot") as progress:
        for start in range(0, len(todo), args.rewrite_batch_size):
            batch = todo[start : start + args.rewrite_batch_size]
            texts, failed = rewrite.rewrites([(s.row, s.row["reasoning"], s.window.high, s.window.low) for s in batch])
            records = []
            for slot, text, request_failed in zip(batch, texts, failed):
                record = {"key": slot.key(teacher), "example": None, "failures": []}
                reason = "request_failed" if request_failed else worker.failure(slot.row, text, slot.window, rewrite)
                found = None
                if reason is None:
                    found = (text, worker.tokens(text), "rewrite")
                else:
                    record["failures"].append(f"rewrite:{reason}")
                    counted: Counter = Counter()
                    found = worker.first_passing(
                        slot.row, slot.then, slot.window, counted, slot.length, {}, as_is=False
                    )
                    record["failures"].extend(counted.elements())
                if found is not None:
                    base = {k: v for k, v in slot.row.items() if k != "reasoning"}
                    base["original_reasoning_tokens"] = slot.length
                    record["example"] = make_example(base, slot.mode, slot.budget, found)
                records.append(record)
                _settle(slot, record, examples, failures, report)
                unanswered += request_failed
            append_rows(sidecar, records)
            progress.update(len(batch))
    if unanswered:
        logger.warning(
            "rewrite: the last request of %d slot(s) failed (attempts: %d; %s in the stats); they fell back to the "
            "compressors after rewrite, and a rerun asks for them again.",
            unanswered, args.rewrite_max_attempts, REQUEST_FAILED,
        )  # fmt: skip
    return examples


def _settle(slot: PendingRewrite, record: dict, examples: dict, failures: Counter, report: SlotReport) -> None:
    failures.update(record["failures"])
    if record["example"] is not None:
        examples[slot.index].append((slot.position, record["example"]))
        report.kept(slot.budget, slot.length)
    else:
        failures[f"dropped:{slot.mode}"] += 1
        report.dropped(slot.budget, slot.length, slot.failed_before + record["failures"])


def build_compressors(args: CompressArguments, teacher_args: TeacherArguments, tokenizer) -> dict[str, Compressor]:
    names = set(args.compressors) | set(args.auto_label_compressors)
    built = {}
    for name in names:
        if name == "rewrite":
            from cotx_rl.teachers import build_teacher

            teacher = build_teacher(teacher_args)
            teacher.check()
            built[name] = RewriteCompressor(tokenizer, teacher, max_attempts=args.rewrite_max_attempts)
        elif name == "prune":
            built[name] = PruneCompressor(tokenizer, keep_score=args.prune_keep_score)
        else:
            built[name] = COMPRESSORS[name](tokenizer)
    return built


def summarize(
    traces: list[dict],
    examples: list[dict],
    failures: Counter,
    grid: list[int],
    report: SlotReport | None = None,
    input_drops: Counter | None = None,
) -> dict:
    """The stats report: kept and dropped, thinking tokens per budget and compressor, compression ratios, slots by
    length and the auto labels of every trace."""
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
    dropped = {k: v for k, v in sorted(failures.items()) if not k.startswith("replanned:")}
    replanned = {k.removeprefix("replanned:"): v for k, v in sorted(failures.items()) if k.startswith("replanned:")}
    stats = {
        "traces": len(traces),
        "examples": len(examples),
        "examples_per_mode": dict(Counter(e["budget_mode"] for e in examples)),
        "dropped": dropped,
        "replanned": replanned,
        "input_dropped": dict(sorted((input_drops or Counter()).items())),
        "budget_grid": grid,
        "thinking_tokens": tokens,
        "compression_ratio": {name: round(statistics.mean(v), 3) for name, v in sorted(ratios.items())},
        "auto_label_by_difficulty": {
            str(k): round(statistics.mean(v), 1) for k, v in sorted(labels.items(), key=_difficulty_key)
        },
    }
    if report is not None:
        stats.update(report.summary(grid))
    return stats


def format_table(stats: dict) -> str:
    header = f"{'mode/budget/compressor':<28}{'examples':>9}{'mean':>8}{'min':>6}{'max':>6}{'ratio':>8}"
    lines = [header, "-" * len(header)]
    for key, row in stats["thinking_tokens"].items():
        lines.append(
            f"{key:<28}{row['examples']:>9}{row['mean_tokens']:>8}{row['min_tokens']:>6}{row['max_tokens']:>6}"
            f"{row['compression_ratio']:>8}"
        )
    lines.append(f"traces {stats['traces']}, examples {stats['examples']} {stats['examples_per_mode']}")
    if stats.get("input_dropped"):
        lines.append(f"input rows dropped {stats['input_dropped']}")
    lines.append(f"dropped {stats['dropped']}")
    if stats.get("replanned"):
        lines.append(f"replanned {stats['replanned']}")
    for name, row in stats.get("slots", {}).items():
        lines.append(f"exact/max slots, {name}: kept {row['kept']} of {row['planned']}; failures {row['failures']}")
    if "auto_labels" in stats:
        auto = stats["auto_labels"]
        lines.append(
            f"auto labels: {auto['labelled']} of {auto['traces']} traces, per budget {auto['per_budget']}, "
            f"mean by difficulty {auto['mean_by_difficulty']}"
        )
    lines.append(
        f"compression ratio {stats['compression_ratio']}; auto label by difficulty {stats['auto_label_by_difficulty']}"
    )
    return "\n".join(lines)


def main(
    args: CompressArguments,
    teacher_args: TeacherArguments | None = None,
    columns: TraceColumnArguments | None = None,
    run_args: RunArguments | None = None,
) -> dict:
    from tqdm.auto import tqdm

    started = time.monotonic()
    grid = (run_args or RunArguments()).budget_grid
    output = check_output_path(args.output_path)
    check_writable_output(output, "Examples output file")
    if args.stats_path:
        check_writable_output(args.stats_path, "Stats file")
    traces, input_drops = load_traces(args.traces_path, columns, "Traces file")
    if not traces:
        raise StageInputError(f"No usable trace in {args.traces_path!r}: {dict(input_drops)}.")
    check_unique_ids(traces, key=trace_key)
    tokenizer = load_tokenizer(args.student_tokenizer)
    compressors = build_compressors(args, teacher_args or TeacherArguments(), tokenizer)
    worker = TraceCompressor(compressors, tokenizer)
    failures: Counter = Counter()
    report = SlotReport()
    by_trace: dict[int, list[tuple[int, dict]]] = defaultdict(list)
    pending: list[PendingRewrite] = []
    try:
        for index, row in enumerate(tqdm(traces, desc="compress", unit="trace")):
            examples, slots = compress_trace(index, row, args, grid, worker, failures, report)
            by_trace[index].extend(examples)
            pending.extend(slots)
        if pending:
            sidecar = output.with_name(output.stem + ".rewrites.jsonl")
            for index, examples in run_rewrites(pending, args, worker, failures, report, sidecar).items():
                by_trace[index].extend(examples)
    finally:
        if "rewrite" in compressors:
            compressors["rewrite"].teacher.close()
    examples = [example for index in sorted(by_trace) for _, example in sorted(by_trace[index], key=lambda p: p[0])]
    if not examples:
        raise StageInputError(f"No example of {args.traces_path!r} passed the checks: {dict(failures)}.")
    write_rows(output, examples)
    stats = summarize(traces, examples, failures, grid, report, input_drops)
    write_json(args.stats_path or output.with_name(output.stem + "_stats.json"), stats)
    logger.info(
        "Compression report for %s (%d traces in %.1f s)\n%s",
        output,
        len(traces),
        time.monotonic() - started,
        format_table(stats),
    )
    return stats


def make_parser():
    from cotx_rl.config import make_parser

    return make_parser(CompressArguments, TeacherArguments, TraceColumnArguments, RunArguments)


if __name__ == "__main__":
    from cotx_rl.cli import main as cli

    raise SystemExit(cli(["compress", *sys.argv[1:]]))
