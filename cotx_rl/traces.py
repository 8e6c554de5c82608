"""Stage `traces`: a teacher writes one reasoning trace per problem.

```
cotx-rl traces --config recipe.yaml
python -m cotx_rl.traces --problems_path problems.jsonl --output_path traces.jsonl --teacher openai \\
    --teacher_model Qwen/Qwen3-8B --base_url http://localhost:8000/v1
```

Each output row is the problem row (extra columns untouched) plus `teacher`, `reasoning`, `response`,
`teacher_correct` (the teacher's final answer equals the gold `answer`) and `finish_reason` (`stop` or `length`).
Rows are appended batch by batch, so a killed run loses at most the batch in flight; run it again and it skips the
problems already in the output file (a torn last line left by the kill is cut, and the log says so). A run holds an
exclusive lock on `<output_path>.lock` while it works, so a second run on the same output file stops at once instead
of tracing the same problems again; rows of one id that an earlier file already repeats are counted in the summary
(`repeated_in_output`) and named in a warning.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from cotx_rl.budget import render_completion
from cotx_rl.io import (
    Rows,
    StageInputError,
    append_rows,
    check_output_path,
    check_rows,
    check_unique_ids,
    check_writable_output,
    describe_duplicates,
    duplicate_ids,
    exclusive_output,
    gold_text,
    read_rows,
    refuse_rows,
    repair_jsonl_tail,
)
from cotx_rl.teachers import Teacher, TeacherArguments, TeacherOutput, build_teacher

logger = logging.getLogger(__name__)

PROBLEM_COLUMNS = ["id", "question", "answer"]


@dataclass
class TracesArguments:
    """Where the problems come from and where the traces go."""

    problems_path: str = field(
        default="data/problems.jsonl",
        metadata={"help": "Problems file (JSONL, Parquet or CSV) with at least the columns id, question, answer."},
    )
    output_path: str = field(
        default="data/traces.jsonl",
        metadata={"help": "Traces file (JSONL); appended to, so a rerun resumes after the problems already there."},
    )
    limit: int | None = field(default=None, metadata={"help": "Trace only the first N problems (default: all)."})


def make_parser():
    from cotx_rl.config import make_parser

    return make_parser(TracesArguments, TeacherArguments)


def load_problems(path: str, limit: int | None) -> Rows:
    """The problem rows to trace: every row with an id, a question (text) and a gold answer (numbers are read as
    their text), and no id twice; else a `StageInputError` naming the file, the line and the id."""
    if limit is not None and limit < 0:
        raise StageInputError(f"limit must be >= 0, got {limit}.")
    rows = read_rows(path, "Problems file")
    check_rows(rows, PROBLEM_COLUMNS, text_columns=["question"])
    unreadable = [
        (index, f"answer is {row['answer']!r}, not a gold answer")
        for index, row in enumerate(rows)
        if gold_text(row["answer"]) is None
    ]
    refuse_rows(rows, unreadable, "give every problem its gold answer (text or a number)")
    check_unique_ids(rows)
    for row in rows:
        row["answer"] = gold_text(row["answer"])
    return rows if limit is None else rows.select(range(min(limit, len(rows))))


def done_ids(path: Path, teacher_label: str) -> tuple[set, int]:
    """Ids already in the output file, and how many of its rows repeat an id that is there before them.

    A torn last line left by a killed run is cut first (and reported): its problem is traced again.
    """
    cut = repair_jsonl_tail(path)
    if cut:
        logger.warning(
            "Cut a torn last line (%d bytes) from %s, left by a run that was stopped mid-write; its problem is traced "
            "again: %r",
            len(cut),
            path,
            cut[:80].decode("utf-8", "replace"),
        )
    if not path.exists() or path.stat().st_size == 0:
        return set(), 0
    rows = read_rows(path, "Traces output file")
    others = sorted({str(row.get("teacher")) for row in rows} - {teacher_label})
    if others:
        logger.warning("%s already holds traces by %s; adding traces by %s.", path, others, teacher_label)
    without_id = [number for row, number in zip(rows, rows.line_numbers) if row.get("id") is None]
    if without_id:
        logger.warning("%s holds %d rows without an id (line %s); they are left as they are.", path, len(without_id),
                       without_id[0])  # fmt: skip
    duplicates = duplicate_ids(rows)
    repeated = sum(len(lines) - 1 for lines in duplicates.values())
    if repeated:
        logger.warning(
            "%s already repeats %d ids in %d extra rows (%s), left by earlier runs on the same file; keep one row per "
            "id before the verify stage.",
            path,
            len(duplicates),
            repeated,
            describe_duplicates(duplicates),
        )
    return {row["id"] for row in rows if row.get("id") is not None}, repeated


def trace_rows(rows: list[dict], outputs: list[TeacherOutput], teacher_label: str) -> list[dict]:
    """Problem rows with the teacher's trace, its correctness against the gold answer, and why it ended."""
    from rewards import correctness_reward

    if len(outputs) != len(rows):
        raise RuntimeError(f"The teacher returned {len(outputs)} traces for {len(rows)} problems.")
    texts = [render_completion(output.reasoning, output.response) for output in outputs]
    scores = correctness_reward(texts, answer=[row["answer"] for row in rows])
    return [
        {
            **row,
            "teacher": teacher_label,
            "reasoning": output.reasoning,
            "response": output.response,
            "teacher_correct": score == 1.0,
            "finish_reason": "stop" if output.finished else "length",
        }
        for row, output, score in zip(rows, outputs, scores)
    ]


def write_traces(teacher: Teacher, todo: list[dict], output_path: Path, batch_size: int, progress) -> Counter:
    """Trace `todo` batch by batch, appending each finished batch; counts of rows written, correct and cut."""
    counts = Counter()
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        rows = trace_rows(batch, teacher.generate(batch), teacher.label)
        append_rows(output_path, rows, "Traces output file")
        counts.update(
            written=len(rows),
            correct=sum(row["teacher_correct"] for row in rows),
            truncated=sum(row["finish_reason"] == "length" for row in rows),
        )
        progress.update(len(rows))
    return counts


def main(script_args: TracesArguments, teacher_args: TeacherArguments) -> dict:
    """Write a trace for every problem not yet in `output_path`; returns a summary of the run."""
    from tqdm.auto import tqdm

    started = time.monotonic()
    output_path = check_output_path(script_args.output_path, "Traces output file")
    if output_path.suffix != ".jsonl":
        raise StageInputError(f"Traces output file {str(output_path)!r} must end in .jsonl (rows are appended).")
    if teacher_args.batch_size <= 0:
        raise StageInputError(f"batch_size must be positive, got {teacher_args.batch_size}.")
    if output_path.exists() and output_path.resolve() == Path(script_args.problems_path).resolve():
        raise StageInputError(f"Traces output file {str(output_path)!r} is the problems file; choose another path.")
    check_writable_output(output_path, "Traces output file", append=True)
    problems = load_problems(script_args.problems_path, script_args.limit)
    if int(os.environ.get("RANK", "0")) != 0:
        # Under `accelerate launch` with several processes, every process appending every trace would duplicate
        # rows; the first process does the work (a model backend spreads itself over the GPUs it sees).
        logger.info("traces: process %s leaves the work to process 0.", os.environ["RANK"])
        return {"total": len(problems), "already_done": 0, "written": 0, "correct": 0, "truncated": 0,
                "repeated_in_output": 0, "seconds": 0.0}  # fmt: skip
    with exclusive_output(output_path, "Traces output file"):
        teacher = build_teacher(teacher_args)
        try:
            teacher.check()
            done, repeated = done_ids(output_path, teacher.label)
            todo = [row for row in problems if row["id"] not in done]
            already_done = len(problems) - len(todo)
            with tqdm(total=len(problems), initial=already_done, unit="row", desc="traces", dynamic_ncols=True) as bar:
                counts = write_traces(teacher, todo, output_path, teacher_args.batch_size, bar)
        finally:
            teacher.close()
    summary = {
        "total": len(problems),
        "already_done": already_done,
        "written": counts["written"],
        "correct": counts["correct"],
        "truncated": counts["truncated"],
        "repeated_in_output": repeated,
        "seconds": round(time.monotonic() - started, 3),
    }
    logger.info(
        "traces: %d problems, %d already done, %d written (%d correct, %d cut by max_new_tokens), %d rows repeating "
        "an id already in the output, in %.1f s -> %s",
        *(summary[key] for key in ("total", "already_done", "written", "correct", "truncated", "repeated_in_output")),
        summary["seconds"],
        output_path,
    )
    return summary


if __name__ == "__main__":
    from cotx_rl.cli import main as cli

    raise SystemExit(cli(["traces", *sys.argv[1:]]))
