"""Stage `verify`: keep the traces whose final answer is correct, and count the others by reason.

The traces file is read as it comes, by the same loader as the `compress` stage ([`cotx_rl.trace_rows`]): a
`reasoning` and `response` pair under any of the common column names, or one raw R1-style completion split at
`</think>`. The kept traces are written in the project's trace schema.

A trace is dropped as `truncated` when its thought was not finished (the teacher hit its length limit, a false
completeness flag, a completion without `</think>`), `null_gold` when its gold answer is null or empty,
`unreadable_gold` when the gold cannot be read (a list or a boolean in the file, or text the verifier cannot parse),
`failed` when the `traces` stage recorded a failed request in its place (`finish_reason: error`; a rerun of `traces`
retries it and appends the trace, which is then kept, while the failed row still counts here), `stray_tag` when its
reasoning or response holds a marker of the budget format (a literal `</think>` in code, a second thought), `no_answer`
when no final answer can be read, `wrong_answer` when the answer differs from the gold, `unverified` when the verifier
could not judge the pair (its worker died, or the call ran out of time for slow items; see
`rewards.CorrectnessReward`), and `duplicate` when an earlier row of the file has the same id (and sample index): the
first is kept, the repeats are counted. The log names the lines of every drop. Correctness is decided here with
`rewards.correctness_reward`, whatever `teacher_correct` a brought-in file says.
"""

from __future__ import annotations

import logging
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from cotx_rl.budget import render_completion
from cotx_rl.io import (
    Rows,
    StageInputError,
    check_writable_output,
    count_drops,
    describe_duplicates,
    duplicate_ids,
    write_json,
    write_rows,
)
from cotx_rl.trace_rows import TraceColumnArguments, load_traces, trace_key
from rewards.correctness import correctness_reward, extract_final_answer

logger = logging.getLogger(__name__)
DROP_REASONS = ("truncated", "null_gold", "failed", "stray_tag", "duplicate", "no_answer", "wrong_answer",
                "unreadable_gold", "unverified")  # fmt: skip


@dataclass
class VerifyArguments:
    """Every field is a recipe key of the `verify` stage."""

    traces_path: str = field(metadata={"help": "Traces file written by the `traces` stage (or brought in)."})
    output_path: str = field(metadata={"help": "Kept traces (.jsonl or .parquet)."})
    stats_path: str | None = field(default=None, metadata={"help": "JSON file for kept and dropped counts."})


def drop_reason(row: dict, score: float | None, why_none: str | None = None) -> str | None:
    """Why a trace is dropped, or None to keep it (`why_none`: why the verifier scored None)."""
    if row.get("finish_reason") == "length":
        return "truncated"
    if score is None:
        return "unverified" if why_none not in (None, "unreadable_gold") else "unreadable_gold"
    if score > 0:
        return None
    text = render_completion(row["reasoning"], row.get("response") or "")
    return "no_answer" if extract_final_answer(text) is None else "wrong_answer"


def verify_rows(rows: list[dict]) -> tuple[list[dict], Counter]:
    """Kept rows (with `teacher_correct` set) and the count of drops per reason."""
    texts = [render_completion(row["reasoning"], row.get("response") or "") for row in rows]
    scores, why_none = correctness_reward.score_with_reasons([row["answer"] for row in rows], texts)
    rows = rows if isinstance(rows, Rows) else Rows(rows, name="Traces")
    kept, lines = [], defaultdict(list)
    for row, score, why, number in zip(rows, scores, why_none, rows.line_numbers):
        reason = drop_reason(row, score, why)
        if reason is None:
            kept.append({**row, "teacher_correct": True})
        else:
            lines[reason].append(number)
    return kept, count_drops(rows, lines, logging.INFO)


def drop_repeats(rows, drops: Counter):
    """The rows without repeats of an earlier row's id (and sample index); repeats are counted and logged."""
    duplicates = duplicate_ids(rows, key=trace_key)
    if not duplicates:
        return rows
    repeated = {line for lines in duplicates.values() for line in lines[1:]}
    kept = [index for index, line in enumerate(rows.line_numbers) if line not in repeated]
    drops["duplicate"] += len(rows) - len(kept)
    logger.warning(
        "%s repeats %s: kept the first of each, dropped %d repeats.", rows.name, describe_duplicates(duplicates),
        len(rows) - len(kept),
    )  # fmt: skip
    return rows.select(kept)


def main(args: VerifyArguments, columns: TraceColumnArguments | None = None) -> dict:
    check_writable_output(args.output_path, "Kept traces output file")
    if args.stats_path:
        check_writable_output(args.stats_path, "Stats file")
    rows, drops = load_traces(args.traces_path, columns, "Traces file")
    total = len(rows) + sum(drops.values())
    rows = drop_repeats(rows, drops) if rows else rows
    kept, verify_drops = verify_rows(rows) if rows else ([], Counter())
    drops.update(verify_drops)
    stats = {"total": total, "kept": len(kept), "dropped": {reason: drops[reason] for reason in DROP_REASONS}}
    if not kept:
        raise StageInputError(f"No trace in {args.traces_path!r} passed verification: {stats['dropped']}.")
    write_rows(args.output_path, kept)
    if args.stats_path:
        write_json(args.stats_path, stats)
    logger.info("Verified %d traces: kept %d, dropped %s", total, len(kept), dict(drops))
    return stats


def make_parser():
    from cotx_rl.config import make_parser

    return make_parser(VerifyArguments, TraceColumnArguments)


if __name__ == "__main__":
    from cotx_rl.cli import main as cli

    raise SystemExit(cli(["verify", *sys.argv[1:]]))
