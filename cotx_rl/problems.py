"""Stage `problems`: problems from a file or a dataset, or the embedded domain's, as `train.jsonl` and `test.jsonl`.

Output rows: `id`, `question`, `answer` (gold, as a string), `source`, `difficulty` (None when unknown), plus any other
columns of the source. Presets read the common formats: `gsm8k` (gold after `#### `), `math` (MATH and MATH-500: the
`answer` column, or the last `\\boxed{}` of `solution`; difficulty from `level`, or `difficulty` as in DeepScaleR's
copy; ids from `unique_id`, made up when there is none, as in MATH's training set), `aime` and `amc` (`id`, `problem`,
`answer`, as in AI-MO's AIME and AMC validation sets; ids made up when there is no `id`) and `qwq` (QwQ's evaluation
files: `prompt`, `answer`).
[`read_problems`] maps a file or dataset split the same way for the `eval` stage.

What the stage refuses, drops and counts:
- a row without a column the mapping needs, a null id, or an id that appears twice (within a split or across the
  source's train and test splits) is refused with one message naming the file, the line and the id;
- a row without a question (null or empty) or without a readable gold (null, empty, or none after `####`) is dropped,
  and the log counts the drops and names their lines; golds written as numbers (`42`, `0.5`) are read as their text;
- `test_size` splits by question, not by row: rows with the same question (whitespace aside) go to the same side, so
  that repeats, which made-up ids would hide, never put a test question in training; the log counts such repeats;
- when the source has its own train and test splits, train rows whose question is also in test are dropped (and
  counted): the test split stays as published.
"""

from __future__ import annotations

import logging
import math
import random
import re
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path

from cotx_rl import arithmetic
from cotx_rl.io import (
    READABLE_SUFFIXES,
    Rows,
    StageInputError,
    check_unique_ids,
    check_writable_output,
    gold_text,
    listing,
    read_rows,
    refuse_rows,
    require_columns,
    write_rows,
)
from rewards.correctness import extract_final_answer

logger = logging.getLogger(__name__)

PRESETS = {
    "gsm8k": {"question_column": "question", "answer_column": "answer", "answer_format": "gsm8k"},
    "math": {
        "question_column": "problem",
        "answer_column": "answer",
        "solution_column": "solution",
        "answer_format": "boxed",
        "difficulty_column": "level",
        "id_column": "unique_id",
    },
    "aime": {"question_column": "problem", "answer_column": "answer", "id_column": "id"},
    "amc": {"question_column": "problem", "answer_column": "answer", "id_column": "id"},
    "qwq": {"question_column": "prompt", "answer_column": "answer"},
}
# Preset columns that not every file in the preset's format has, with what to use instead, in order (None: none).
# MATH's own training set has no `unique_id` (ids are made up), and MATH copies such as DeepScaleR's write the level
# as `difficulty`. A column named in the recipe is always required.
PRESET_FALLBACKS = {
    "math": {"id_column": (None,), "difficulty_column": ("difficulty", None)},
    "aime": {"id_column": (None,)},
    "amc": {"id_column": (None,)},
}
ANSWER_FORMATS = ("plain", "gsm8k", "boxed")


@dataclass
class ProblemsArguments:
    """Where problems come from and where they go. Every field is a recipe key of the `problems` stage."""

    output_dir: str = field(metadata={"help": "Folder for train.jsonl and test.jsonl."})
    source: str = field(
        default="embedded",
        metadata={
            "help": "`embedded` (the built-in chain-arithmetic domain), a local file (.jsonl/.json/.parquet/.csv) or "
            "a dataset name for `datasets.load_dataset`."
        },
    )
    preset: str | None = field(
        default=None, metadata={"help": f"Column mapping preset: one of {', '.join(PRESETS)} (or none)."}
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Dataset configuration name (hub datasets)."})
    train_split: str = field(default="train", metadata={"help": "Split read as training problems (hub datasets)."})
    test_split: str | None = field(
        default="test", metadata={"help": "Split read as test problems (hub datasets); none to skip."}
    )
    test_size: float | None = field(
        default=None,
        metadata={"help": "Fraction held out as test problems when the source is one file or one split."},
    )
    question_column: str = field(default="question", metadata={"help": "Column holding the question."})
    answer_column: str = field(default="answer", metadata={"help": "Column holding the gold answer."})
    solution_column: str | None = field(
        default=None, metadata={"help": "Worked solution whose last \\boxed{} is the gold when `answer` is missing."}
    )
    id_column: str | None = field(default=None, metadata={"help": "Column of unique ids (default: made up)."})
    difficulty_column: str | None = field(
        default=None, metadata={"help": "Column of difficulty levels (numbers, or text such as 'Level 3')."}
    )
    answer_format: str = field(
        default="plain",
        metadata={"help": f"How the gold is written: one of {', '.join(ANSWER_FORMATS)}."},
    )
    num_train: int | None = field(
        default=None, metadata={"help": "Training problems: the embedded domain's size, or a cap for other sources."}
    )
    num_test: int | None = field(default=None, metadata={"help": "Test problems, likewise."})
    seed: int = field(default=0, metadata={"help": "Seed of the embedded domain and of test_size splits."})
    min_steps: int = field(default=1, metadata={"help": "Embedded domain: fewest operations (easiest level)."})
    max_steps: int = field(default=6, metadata={"help": "Embedded domain: most operations (hardest level)."})
    max_value: int = field(default=99, metadata={"help": "Embedded domain: running values stay in [0, max_value]."})
    max_operand: int = field(default=9, metadata={"help": "Embedded domain: operands are 1..max_operand."})

    def __post_init__(self):
        if self.preset is not None:
            if self.preset not in PRESETS:
                raise StageInputError(f"Unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}.")
            defaults = {f.name: f.default for f in fields(self)}
            self._from_preset = set()  # the keys the preset set (not the recipe): their columns may fall back
            for key, value in PRESETS[self.preset].items():
                if getattr(self, key) == defaults[key]:  # keys set in the recipe win over the preset
                    setattr(self, key, value)
                    self._from_preset.add(key)
        if self.answer_format not in ANSWER_FORMATS:
            raise StageInputError(
                f"Unknown answer_format {self.answer_format!r}; choose one of {', '.join(ANSWER_FORMATS)}."
            )
        if self.test_size is not None and not 0 < self.test_size < 1:
            raise StageInputError(f"test_size must be between 0 and 1, got {self.test_size}.")


def read_gold(row: dict, args: ProblemsArguments) -> str | None:
    """The gold answer as text (numbers as their decimal spelling), or None when there is none to read."""
    value = row.get(args.answer_column)
    if args.answer_format == "gsm8k":
        if not isinstance(value, str) or "####" not in value:
            return None
        return gold_text(value.rsplit("####", 1)[1])
    if args.answer_format == "boxed":
        if gold_text(value) is not None:
            return gold_text(value)
        solution = row.get(args.solution_column or "", "") or ""
        return extract_final_answer(str(solution))
    return gold_text(value)


def question_key(question: str) -> str:
    """Questions that differ only in whitespace are the same question."""
    return " ".join(question.split())


def read_difficulty(value) -> int | float | None:
    if value is None or isinstance(value, (int, float)):
        return value
    match = re.search(r"-?\d+(?:\.\d+)?", str(value))
    return None if match is None else float(match.group()) if "." in match.group() else int(match.group())


def resolve_preset_columns(records: Rows, args: ProblemsArguments) -> None:
    """Point a preset's optional columns that no record has at their fallback (`PRESET_FALLBACKS`), and say so."""
    fallbacks = PRESET_FALLBACKS.get(args.preset, {})
    for key, alternatives in fallbacks.items():
        column = getattr(args, key)
        if key not in getattr(args, "_from_preset", ()) or column is None or any(column in r for r in records):
            continue
        chosen = next((c for c in alternatives if c is None or all(c in r for r in records)), None)
        setattr(args, key, chosen)
        instead = f"using {chosen!r}" if chosen else "ids made up" if key == "id_column" else "no difficulty"
        logger.info("%s has no %r column (preset %s): %s.", records.name, column, args.preset, instead)


def to_problem_rows(records: Rows, args: ProblemsArguments, keep_unreadable: bool = False) -> Rows:
    """Map source records to problem rows (made-up ids come later, per split).

    Records without a question or without a readable gold are dropped, and the log counts them by line (with
    `keep_unreadable`, those without a readable gold are kept with `answer` None: evaluation counts them apart); a
    record without a column the mapping needs, or with a null id, is refused.
    """
    resolve_preset_columns(records, args)
    columns = [args.question_column]
    if args.answer_format != "boxed" or not args.solution_column:
        columns.append(args.answer_column)
    columns += [c for c in (args.id_column, args.difficulty_column) if c]
    require_columns(records, columns)
    if args.answer_format == "boxed" and args.solution_column:
        bad = [(i, f"lacks both {args.answer_column!r} and {args.solution_column!r}") for i, record in
               enumerate(records) if args.answer_column not in record and args.solution_column not in record]  # fmt: skip
        refuse_rows(records, bad, "every row needs a gold answer or a worked solution")
    if args.id_column:
        bad = [(i, f"{args.id_column} is null") for i, record in enumerate(records) if record[args.id_column] is None]
        refuse_rows(records, bad, "give every row an id, or drop id_column to have ids made up")
    kept, line_numbers = [], []
    dropped: dict[str, list[int]] = {
        "without a question (null, empty or not text)": [],
        "without a readable gold answer": [],
    }
    for record, number in zip(records, records.line_numbers):
        question = record[args.question_column]
        gold = read_gold(record, args)
        if not isinstance(question, str) or not question.strip():
            dropped["without a question (null, empty or not text)"].append(number)
            continue
        if gold is None:
            dropped["without a readable gold answer"].append(number)
            if not keep_unreadable:
                continue
        row = {"id": None, **record}  # id first for people who read the file; made up later when not given
        row.update(
            question=question,
            answer=gold,
            source=record.get("source", args.source),
            difficulty=read_difficulty(record.get(args.difficulty_column)) if args.difficulty_column else None,
        )
        if args.id_column:
            row["id"] = str(record[args.id_column])
        kept.append(row)
        line_numbers.append(number)
    for reason, numbers in dropped.items():
        if numbers:
            what = "kept (not scored)" if keep_unreadable and "gold" in reason else "dropped"
            logger.warning("%s: %s %d rows %s (%s).", records.name, what, len(numbers), reason,
                           listing(numbers, records.unit))  # fmt: skip
    return Rows(kept, line_numbers, records.name, records.unit)


def split_by_question(rows: Rows, test_size: float, seed: int) -> dict[str, Rows]:
    """Hold out about `test_size` of the rows as test, whole questions at a time, both sides in source order.

    Rows with the same question form one group, and a group goes to one side whole: a question repeated under two
    made-up ids is never in training and in test at once.
    """
    groups: dict[str, list[int]] = {}
    for index, row in enumerate(rows):
        groups.setdefault(question_key(row["question"]), []).append(index)
    order = list(groups.values())
    random.Random(seed).shuffle(order)
    test_target = math.ceil(test_size * len(rows))
    test: list[int] = []
    for group in order:
        if len(test) + len(group) <= test_target:
            test.extend(group)
    held_out = set(test)
    return {"train": rows.select(i for i in range(len(rows)) if i not in held_out), "test": rows.select(sorted(test))}


def separate_splits(splits: dict[str, Rows]) -> dict[str, Rows]:
    """Splits given by the source: no id may be in both; train rows whose question is also in test are dropped."""
    if "test" not in splits:
        return splits
    train, test = splits["train"], splits["test"]
    test_ids = {row["id"]: number for row, number in zip(test, test.line_numbers) if "id" in row}
    for row, number in zip(train, train.line_numbers):
        if row.get("id") in test_ids:
            raise StageInputError(
                f"{train.name} {train.unit} {number} and {test.name} {test.unit} {test_ids[row['id']]} share id "
                f"{row['id']!r}; ids must be unique across splits: fix the source or drop id_column to make ids up."
            )
    test_questions = {question_key(row["question"]) for row in test}
    leaked = [i for i, row in enumerate(train) if question_key(row["question"]) in test_questions]
    if leaked:
        logger.warning("%s: dropped %d rows whose question is also in the test split (%s).", train.name, len(leaked),
                       listing([train.line_numbers[i] for i in leaked], train.unit))  # fmt: skip
        leaked_set = set(leaked)
        splits = {**splits, "train": train.select(i for i in range(len(train)) if i not in leaked_set)}
    return splits


def load_source(args: ProblemsArguments) -> dict[str, Rows]:
    """Records per split from a local file or a dataset name (`all` for one file that `test_size` will split)."""
    path = Path(args.source)
    if path.suffix in READABLE_SUFFIXES or path.exists():
        return {"all" if args.test_size else "train": read_rows(path, "Problems file")}
    import datasets

    splits = {"train": args.train_split} | ({"test": args.test_split} if args.test_split else {})
    loaded = {}
    for name, split in splits.items():
        try:
            records = datasets.load_dataset(args.source, args.dataset_config, split=split).to_list()
        except Exception as error:  # the hub, a script or a bad split: all end here with the same message
            raise StageInputError(f"Cannot load dataset {args.source!r} split {split!r}: {error}") from error
        if not records:
            raise StageInputError(f"Dataset {args.source!r} split {split!r} has no rows.")
        loaded[name] = Rows(records, name=f"Dataset {args.source!r} split {split!r}", unit="row")
    return loaded


def read_problems(source: str, preset: str | None = None, split: str = "test", keep_unreadable: bool = False) -> Rows:
    """Problem rows from a local file or a dataset split, columns mapped by `preset` as the `problems` stage maps them,
    with their line numbers; ids made up (`<stem>-<split>-<index>`) when the preset names no id column.

    Args:
        source: a local file (.jsonl/.json/.parquet/.csv) or a dataset name for `datasets.load_dataset`.
        preset: one of `PRESETS` (None: the columns are already `question` and `answer`).
        split: the dataset split to read (hub datasets).
        keep_unreadable: keep rows whose gold cannot be read, with `answer` None.
    """
    args = ProblemsArguments(output_dir="", source=source, preset=preset, train_split=split, test_split=None)
    rows = to_problem_rows(load_source(args)["train"], args, keep_unreadable=keep_unreadable)
    if not args.id_column:
        for index, row in enumerate(rows):
            row["id"] = f"{Path(source).stem}-{split}-{index:06d}"
    return rows


def problems_from_source(args: ProblemsArguments) -> dict[str, list[dict]]:
    """Problem rows per split from a file or a dataset, checked, split and capped, with their ids."""
    tables = {name: to_problem_rows(records, args) for name, records in load_source(args).items()}
    if args.id_column:
        for table in tables.values():
            check_unique_ids(table)
    if "all" in tables:
        tables = split_by_question(tables["all"], args.test_size, args.seed)
    else:
        tables = separate_splits(tables)
    caps = {"train": args.num_train, "test": args.num_test}
    splits = {}
    stem = Path(args.source).stem
    for name, table in tables.items():
        rows = list(table[: caps[name]] if caps[name] else table)
        if not args.id_column:
            for index, row in enumerate(rows):
                row["id"] = f"{stem}-{name}-{index:06d}"
        repeats = len(rows) - len({question_key(row["question"]) for row in rows})
        if repeats:
            logger.warning("%s %s: %d rows repeat a question of another row (kept, on this side only).", args.source,
                           name, repeats)  # fmt: skip
        splits[name] = rows
    return splits


def main(args: ProblemsArguments) -> dict[str, Path]:
    """Write `train.jsonl` (and `test.jsonl`) to `args.output_dir`; returns the paths by split."""
    output_dir = Path(args.output_dir)
    check_writable_output(output_dir, "Problems output folder", folder=True)
    if args.source == "embedded":
        domain = dict(
            seed=args.seed,
            min_steps=args.min_steps,
            max_steps=args.max_steps,
            max_value=args.max_value,
            max_operand=args.max_operand,
        )
        try:
            splits = {
                "train": arithmetic.make_problems(args.num_train or 1000, "train", **domain),
                "test": arithmetic.make_problems(args.num_test or 200, "test", **domain),
            }
        except ValueError as error:  # the domain settings ask for more problems than it has, or make no sense
            raise StageInputError(str(error)) from error
    else:
        splits = problems_from_source(args)
    for name, rows in splits.items():
        if not rows:
            raise StageInputError(f"No {name} problems with a question and a readable gold answer in {args.source!r}.")
    paths = {}
    for name, rows in splits.items():
        paths[name] = write_rows(output_dir / f"{name}.jsonl", rows, "Problems output file")
        logger.info("Wrote %d %s problems to %s", len(rows), name, paths[name])
    return paths


def make_parser():
    from cotx_rl.config import make_parser

    return make_parser(ProblemsArguments)


if __name__ == "__main__":
    from cotx_rl.cli import main as cli

    raise SystemExit(cli(["problems", *sys.argv[1:]]))
