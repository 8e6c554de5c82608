"""Stage `traces`: a teacher writes reasoning traces, one per problem or `num_samples` per problem.

```
cotx-rl traces --config recipe.yaml
python -m cotx_rl.traces --problems_path problems.jsonl --output_path traces.jsonl --teacher openai \\
    --teacher_model Qwen/Qwen3-8B --base_url http://localhost:8000/v1
```

Each output row is the problem row (extra columns untouched) plus `teacher`, `reasoning`, `response`,
`teacher_correct` (the teacher's final answer equals the gold `answer`) and `finish_reason` (`stop` or `length`);
with `num_samples` above 1, also `sample`, the index of the trace among its problem's (a trace is keyed by its id and
sample). A trace the teacher could not get (a request the endpoint refused or kept failing) is written all the same,
with `finish_reason: error` and its `error`, and the run goes on; `verify` counts such rows as `failed` and drops them.

Rows are appended batch by batch, so a killed run loses at most the batch in flight; run it again and it skips the
traces already in the output file, per (id, sample), and retries the failed ones (a torn last line left by the kill
is cut, and the log says so). A run holds an exclusive lock on `<output_path>.lock` while it works, so a second run on
the same output file stops at once instead of tracing the same problems again; rows of one (id, sample) that an
earlier file already repeats are counted in the summary (`repeated_in_output`) and named in a warning.
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
from cotx_rl.trace_rows import FAILED_FINISH_REASON, trace_key

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
        metadata={
            "help": "Traces file (JSONL); appended to, so a rerun resumes after the traces already there and "
            "retries the failed ones."
        },
    )
    limit: int | None = field(default=None, metadata={"help": "Trace only the first N problems (default: all)."})
    num_samples: int = field(
        default=1,
        metadata={
            "help": "Traces drawn per problem. Above 1, each row gets a `sample` index (0 to num_samples - 1), and a "
            "rerun fills in the (id, sample) pairs that are missing."
        },
    )


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


def resume_key(row: dict) -> tuple:
    """(id, sample) of a trace row or of a trace to write; a row without `sample` is its problem's sample 0."""
    return row.get("id"), row.get("sample") or 0


def done_keys(path: Path, teacher_label: str) -> tuple[set, int, set]:
    """The (id, sample) pairs already traced in the output file, how many of its rows repeat a pair that is there
    before them, and the pairs whose rows there all failed (a rerun retries them).

    A torn last line left by a killed run is cut first (and reported): its trace is written again.
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
        return set(), 0, set()
    rows = read_rows(path, "Traces output file")
    others = sorted({str(row.get("teacher")) for row in rows} - {teacher_label})
    if others:
        logger.warning("%s already holds traces by %s; adding traces by %s.", path, others, teacher_label)
    without_id = [number for row, number in zip(rows, rows.line_numbers) if row.get("id") is None]
    if without_id:
        logger.warning("%s holds %d rows without an id (line %s); they are left as they are.", path, len(without_id),
                       without_id[0])  # fmt: skip
    failed = {index for index, row in enumerate(rows) if row.get("finish_reason") == FAILED_FINISH_REASON}
    traced = rows.select([index for index in range(len(rows)) if index not in failed])
    duplicates = duplicate_ids(traced, key=trace_key)
    repeated = sum(len(lines) - 1 for lines in duplicates.values())
    if repeated:
        logger.warning(
            "%s already repeats %d ids in %d extra rows (%s), left by earlier runs on the same file; keep one row per "
            "id (and sample) before the verify stage.",
            path,
            len(duplicates),
            repeated,
            describe_duplicates(duplicates),
        )
    done = {resume_key(row) for row in traced if row.get("id") is not None}
    return done, repeated, {resume_key(rows[index]) for index in failed} - done


def trace_rows(rows: list[dict], outputs: list[TeacherOutput], teacher_label: str) -> list[dict]:
    """Problem rows with the teacher's trace, its correctness against the gold answer, and why it ended; a row whose
    trace failed keeps the error instead (`finish_reason: error`)."""
    from rewards import correctness_reward

    if len(outputs) != len(rows):
        raise RuntimeError(f"The teacher returned {len(outputs)} traces for {len(rows)} problems.")
    traced = [(row, output) for row, output in zip(rows, outputs) if output.error is None]
    texts = [render_completion(output.reasoning, output.response) for _, output in traced]
    scores = iter(correctness_reward(texts, answer=[row["answer"] for row, _ in traced]) if traced else [])
    written = []
    for row, output in zip(rows, outputs):
        if output.error is not None:
            written.append({**row, "teacher": teacher_label, "reasoning": "", "response": "", "teacher_correct": False,
                            "finish_reason": FAILED_FINISH_REASON, "error": output.error})  # fmt: skip
            continue
        written.append(
            {
                **row,
                "teacher": teacher_label,
                "reasoning": output.reasoning,
                "response": output.response,
                "teacher_correct": next(scores) == 1.0,
                "finish_reason": "length" if not output.finished else "stop",
            }
        )
    return written


def write_traces(teacher: Teacher, todo: list[dict], output_path: Path, batch_size: int, progress) -> Counter:
    """Trace `todo` batch by batch, appending each finished batch; counts of traces written, correct, cut and failed
    (failed rows are appended too, with their error)."""
    counts = Counter()
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        rows = trace_rows(batch, teacher.generate(batch), teacher.label)
        append_rows(output_path, rows, "Traces output file")
        failed = sum(row["finish_reason"] == FAILED_FINISH_REASON for row in rows)
        counts.update(
            written=len(rows) - failed,
            correct=sum(row["teacher_correct"] for row in rows),
            truncated=sum(row["finish_reason"] == "length" for row in rows),
            failed=failed,
        )
        if counts["failed"]:
            progress.set_postfix(failed=counts["failed"], refresh=False)
        progress.update(len(rows))
    return counts


def main(script_args: TracesArguments, teacher_args: TeacherArguments) -> dict:
    """Write every trace (`num_samples` per problem) not yet in `output_path`; returns a summary of the run.

    `total` counts traces (problems times `num_samples`); `written` the traces written now, `failed` the rows written
    with an error instead (a rerun retries them).
    """
    from tqdm.auto import tqdm

    started = time.monotonic()
    output_path = check_output_path(script_args.output_path, "Traces output file")
    if output_path.suffix != ".jsonl":
        raise StageInputError(f"Traces output file {str(output_path)!r} must end in .jsonl (rows are appended).")
    if teacher_args.batch_size <= 0:
        raise StageInputError(f"batch_size must be positive, got {teacher_args.batch_size}.")
    num_samples = script_args.num_samples
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise StageInputError(f"num_samples must be a positive integer, got {num_samples!r}.")
    if output_path.exists() and output_path.resolve() == Path(script_args.problems_path).resolve():
        raise StageInputError(f"Traces output file {str(output_path)!r} is the problems file; choose another path.")
    check_writable_output(output_path, "Traces output file", append=True)
    problems = load_problems(script_args.problems_path, script_args.limit)
    # One trace per problem keeps the problem's row as it is; several add their index, the second half of the key.
    wanted = [row if num_samples == 1 else {**row, "sample": k} for row in problems for k in range(num_samples)]
    summary = {"problems": len(problems), "total": len(wanted), "already_done": 0, "written": 0, "correct": 0,
               "truncated": 0, "failed": 0, "retried": 0, "repeated_in_output": 0}  # fmt: skip
    if int(os.environ.get("RANK", "0")) != 0:
        # Under `accelerate launch` with several processes, every process appending every trace would duplicate
        # rows; the first process does the work (a model backend spreads itself over the GPUs it sees).
        logger.info("traces: process %s leaves the work to process 0.", os.environ["RANK"])
        return {**summary, "seconds": 0.0}
    with exclusive_output(output_path, "Traces output file"):
        teacher = build_teacher(teacher_args)
        try:
            teacher.check()
            done, repeated, failed_before = done_keys(output_path, teacher.label)
            todo = [row for row in wanted if resume_key(row) not in done]
            summary.update(already_done=len(wanted) - len(todo), repeated_in_output=repeated)
            summary["retried"] = sum(resume_key(row) in failed_before for row in todo)
            if summary["retried"]:
                logger.info("traces: retrying %d traces whose requests failed in an earlier run.", summary["retried"])
            with tqdm(total=len(wanted), initial=summary["already_done"], unit="row", desc="traces",
                      dynamic_ncols=True) as bar:  # fmt: skip
                counts = write_traces(teacher, todo, output_path, teacher_args.batch_size, bar)
        finally:
            teacher.close()
    summary.update({key: counts[key] for key in ("written", "correct", "truncated", "failed")})
    summary["seconds"] = round(time.monotonic() - started, 3)
    logger.info(
        "traces: %d traces (%d problems), %d already done, %d written (%d correct, %d cut by max_new_tokens), %d "
        "failed (recorded with their error; a rerun retries them), %d rows repeating a trace already in the output, "
        "in %.1f s -> %s",
        *(summary[key] for key in ("total", "problems", "already_done", "written", "correct", "truncated", "failed")),
        summary["repeated_in_output"],
        summary["seconds"],
        output_path,
    )
    return summary


if __name__ == "__main__":
    from cotx_rl.cli import main as cli

    raise SystemExit(cli(["traces", *sys.argv[1:]]))
