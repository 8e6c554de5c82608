"""Trace files as they come, normalised once into the project's trace rows.

Teachers and datasets name their columns differently: the `traces` stage writes `question`, `answer`, `reasoning`,
`response` and `finish_reason`; published traces often have `problem`, `gold_answer`, `thinking`, `answer_text` and a
`complete` flag; an R1-style model's raw output is one completion with `<think>...</think>` in it. [`load_traces`]
reads any of these into rows with `id`, `question`, `answer` (the gold, as text), `reasoning` and `response`, for both
the `verify` and the `compress` stage, so that the two agree on what a trace is:

- the column of each part is a recipe key ([`TraceColumnArguments`]); left unset, the first of the common names that
  the file has is used;
- a raw completion is split at `</think>` by [`split_thinking`], the one place that does it;
- an unfinished thought (a false completeness flag, `finish_reason: length`, or a completion without `</think>`) is
  dropped and counted as `truncated`, a row whose gold is null or empty as `null_gold`, one whose gold is neither
  text nor a number (a list, a boolean) as `unreadable_gold`, a row in which the `traces` stage recorded a failed
  request (`finish_reason: error`, with its `error`) as `failed`, and a row whose reasoning or response still holds a
  marker of the budget format (`<think>`, `</think>`, `<budget>`, `</budget>`: a literal tag in code, a second
  thought) as `stray_tag`; the `<think>`/`</think>` around a reasoning column's own text are taken off first. The
  log names the lines of every drop;
- a gold that is a number in the file (`42`, `0.5`) is read as its text; `difficulty` comes from `math_level` when the
  file has no `difficulty`;
- a row without one of the columns, with a null id, or with empty reasoning, stops the stage with one message that
  names the file, the line and the id.

Every other column passes through untouched; the columns read into the schema's names are renamed, not copied.
"""

from __future__ import annotations

import os
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cotx_rl.budget import BUDGET_END, BUDGET_START, THINK_END, THINK_START
from cotx_rl.io import Rows, StageInputError, count_drops, gold_text, read_rows

# Names looked for, in order, when a column key is left unset.
COMMON_NAMES = {
    "id": ("id", "problem_id", "unique_id", "question_id"),
    "question": ("question", "problem", "prompt"),
    "answer": ("answer", "gold_answer", "gold", "ground_truth"),
    "reasoning": ("reasoning", "thinking", "reasoning_content"),
    "response": ("response", "answer_text", "content"),
    "completion": ("completion", "generation", "output"),
    "complete": ("complete", "finish_reason"),
}
DROP_REASONS = ("truncated", "null_gold", "unreadable_gold", "failed", "stray_tag")
# Markers of the budget format: a trace whose text holds one (beyond the tags around its own thought, which are taken
# off) cannot be written as one `<think>...</think>` completion.
FORMAT_MARKERS = (THINK_START, THINK_END, BUDGET_START, BUDGET_END)
_WRAPPING_TAGS = re.compile(rf"^\s*{re.escape(THINK_START)}|{re.escape(THINK_END)}\s*$")
# The `finish_reason` of a row in which the `traces` stage recorded a request that failed (with its `error`).
FAILED_FINISH_REASON = "error"


def split_completion(text: str) -> tuple[str, str, bool]:
    """Split a teacher's raw text into `(reasoning, response, closed)`.

    R1-style models write `<think>...</think>` (some chat templates open the tag in the prompt, so only `</think>`
    shows). Text without the closing tag is all reasoning, and `closed` is False: the thought was cut.
    """
    if THINK_END in text:
        reasoning, response = text.split(THINK_END, 1)
        reasoning = reasoning.split(THINK_START, 1)[-1]
        return reasoning.strip(), response.strip(), True
    return text.split(THINK_START, 1)[-1].strip(), "", False


def split_thinking(text: str) -> tuple[str, str]:
    """Split a teacher's raw text into `(reasoning, response)` (see [`split_completion`])."""
    reasoning, response, _ = split_completion(text)
    return reasoning, response


@dataclass
class TraceColumnArguments:
    """Which columns of a traces file hold each part of a trace. Unset keys take the first common name the file has.

    Every field is a recipe key of the `verify` and `compress` stages.
    """

    id_column: str | None = field(
        default=None,
        metadata={"help": "Column of the problem id (default: id, problem_id, unique_id or question_id)."},
    )
    question_column: str | None = field(
        default=None, metadata={"help": "Column of the problem text (default: question, problem or prompt)."}
    )
    answer_column: str | None = field(
        default=None,
        metadata={"help": "Column of the gold answer (default: answer, gold_answer, gold or ground_truth)."},
    )
    reasoning_column: str | None = field(
        default=None,
        metadata={"help": "Column of the teacher's thinking (default: reasoning, thinking or reasoning_content)."},
    )
    response_column: str | None = field(
        default=None,
        metadata={"help": "Column of the text after the thought (default: response, answer_text or content)."},
    )
    completion_column: str | None = field(
        default=None,
        metadata={
            "help": "Column of one raw completion with <think>...</think> (R1 style), split into reasoning and "
            "response; used when the file has no reasoning column (default: completion, generation or output)."
        },
    )
    complete_column: str | None = field(
        default=None,
        metadata={
            "help": "Column that says whether the thought was finished: a boolean, or a finish_reason where "
            "'length' means cut (default: complete or finish_reason). Unfinished traces are dropped and counted."
        },
    )


def _pick(first: dict, key: str, configured: str | None, required: bool, where: str) -> str | None:
    if configured is not None:
        if configured not in first:
            raise StageInputError(f"{where} lacks the {key} column {configured!r}; it has {sorted(first)}.")
        return configured
    found = next((name for name in COMMON_NAMES[key] if name in first), None)
    if found is None and required:
        names = " or ".join(repr(n) for n in COMMON_NAMES[key])
        raise StageInputError(
            f"{where} has no {key} column ({names}); it has {sorted(first)}. Set {key}_column to the one to use."
        )
    return found


def _is_finished(value: Any) -> bool:
    if value is None:
        return True  # unknown: taken as finished
    if isinstance(value, str):
        return value.strip().lower() not in ("length", "false", "0", "no", "incomplete")
    return bool(value)


def _difficulty(value: Any) -> Any:
    """`math_level` as a difficulty: 3.0 is 3; anything else as it is."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def trace_key(row: dict) -> Any:
    """What makes a trace one of a kind: its problem id, and its sample index when a teacher drew several per
    problem (the `sample` column)."""
    return row.get("id") if row.get("sample") is None else (row.get("id"), row["sample"])


def load_traces(
    path: str | os.PathLike, columns: TraceColumnArguments | None = None, what: str = "Traces file"
) -> tuple[Rows, Counter]:
    """Trace rows of a file in the project's schema, and the count of rows dropped per reason (`DROP_REASONS`).

    Args:
        path (`str` or `os.PathLike`): a JSONL, JSON, Parquet or CSV file.
        columns ([`TraceColumnArguments`], *optional*): which columns hold what (default: the common names).
        what (`str`): how messages name the file.

    Returns:
        `tuple[Rows, Counter]`: rows with `id`, `question`, `answer`, `reasoning`, `response` and every other column
        of the file (with their line numbers in it, see [`cotx_rl.io.Rows`]), and the count of dropped rows per reason.
    """
    columns = columns or TraceColumnArguments()
    path = Path(path)
    rows = read_rows(path, what)
    where = f"{what} {str(path)!r}"
    # Columns are looked for in every row, so that a row without one is named below rather than the file refused.
    first = dict.fromkeys(key for row in rows for key in row)
    names = {
        "id": _pick(first, "id", columns.id_column, True, where),
        "question": _pick(first, "question", columns.question_column, True, where),
        "answer": _pick(first, "answer", columns.answer_column, True, where),
        "complete": _pick(first, "complete", columns.complete_column, False, where),
    }
    names["reasoning"] = names["response"] = names["completion"] = None
    if columns.completion_column is None:
        names["reasoning"] = _pick(first, "reasoning", columns.reasoning_column, False, where)
    if names["reasoning"] is not None:
        names["response"] = _pick(first, "response", columns.response_column, False, where)
    else:
        names["completion"] = _pick(first, "completion", columns.completion_column, False, where)
    if names["reasoning"] is None and names["completion"] is None:
        raise StageInputError(
            f"{where} has neither a reasoning column ({' or '.join(COMMON_NAMES['reasoning'])}) nor a raw completion "
            f"column ({' or '.join(COMMON_NAMES['completion'])}); it has {sorted(first)}. Set reasoning_column (and "
            "response_column) or completion_column."
        )
    renamed = {names[key]: key for key in ("id", "question", "answer", "reasoning", "response") if names[key]}
    out, kept_lines, dropped = [], [], defaultdict(list)
    for index, (row, number) in enumerate(zip(rows, rows.line_numbers)):

        def fail(problem: str, index: int = index) -> StageInputError:
            return StageInputError(f"{rows.where(index, names['id'])}: {problem}; fix or remove the row.")

        if row.get("finish_reason") == FAILED_FINISH_REASON:
            dropped["failed"].append(number)  # no trace to read: the request failed (a rerun of `traces` retries it)
            continue
        required = [names["id"], names["question"], names["answer"], names["reasoning"] or names["completion"]]
        missing = [column for column in required if column not in row]
        if missing:
            raise fail(f"lacks column(s) {missing} (it has {sorted(row)})")
        if row[names["id"]] is None:
            raise fail("its id is null (ids key the examples, the mode plans and the resumable files)")
        finished = names["complete"] is None or _is_finished(row.get(names["complete"]))
        if names["completion"]:
            completion = row[names["completion"]]
            if not isinstance(completion, str):
                raise fail(f"its completion ({names['completion']!r}) is not text (got {completion!r})")
            reasoning, response, closed = split_completion(completion)
            finished = finished and closed
        else:
            reasoning = row[names["reasoning"]]
            if isinstance(reasoning, str) and _WRAPPING_TAGS.search(reasoning):  # an export kept the thought's tags
                reasoning = _WRAPPING_TAGS.sub("", reasoning).strip()
            response = row.get(names["response"]) if names["response"] else None
        if not finished:
            dropped["truncated"].append(number)
            continue
        gold = gold_text(row[names["answer"]])
        if gold is None:
            value = row[names["answer"]]
            empty = value is None or (isinstance(value, str) and not value.strip())
            dropped["null_gold" if empty else "unreadable_gold"].append(number)
            continue
        if not isinstance(reasoning, str) or not reasoning.strip():
            raise fail(f"its reasoning ({names['reasoning'] or names['completion']!r}) is empty")
        if any(marker in text for text in (reasoning, response or "") for marker in FORMAT_MARKERS):
            dropped["stray_tag"].append(number)
            continue
        question = row[names["question"]]
        if not isinstance(question, str) or not question.strip():
            raise fail(f"its question ({names['question']!r}) is not text")
        # Columns keep their place in the row, under the schema's names, so that a file in the schema passes as it is.
        normalised = {}
        for key, value in row.items():
            if key == names["completion"]:
                normalised.update(reasoning=None, response=None)
            else:
                normalised[renamed.get(key, key)] = value
        normalised.update(question=question, answer=gold, reasoning=reasoning, response=response or "")
        if "difficulty" not in normalised and row.get("math_level") is not None:
            normalised["difficulty"] = _difficulty(row["math_level"])
        out.append(normalised)
        kept_lines.append(number)
    return Rows(out, kept_lines, rows.name, rows.unit), count_drops(rows, dropped)
