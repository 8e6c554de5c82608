"""Stage `problems`: problems from a file or a dataset, or the embedded domain's, as `train.jsonl` and `test.jsonl`.

Output rows: `id`, `question`, `answer` (gold, as a string), `source`, `difficulty` (None when unknown), plus any other
columns of the source. Presets read the common formats: `gsm8k` (gold after `#### `), `math` (MATH and MATH-500: the
`answer` column, or the last `\\boxed{}` of `solution`; difficulty from `level`), `aime` and `amc` (`id`, `problem`,
`answer`, as in AI-MO's AIME and AMC validation sets) and `qwq` (QwQ's evaluation files: `prompt`, `answer`).
[`read_problems`] maps a file or dataset split the same way for the `eval` stage.
"""

from __future__ import annotations

import logging
import re
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path

from cotx_rl import arithmetic
from cotx_rl.io import READABLE_SUFFIXES, StageInputError, load_dataset_file, write_rows
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
            for key, value in PRESETS[self.preset].items():
                if getattr(self, key) == defaults[key]:  # keys set in the recipe win over the preset
                    setattr(self, key, value)
        if self.answer_format not in ANSWER_FORMATS:
            raise StageInputError(
                f"Unknown answer_format {self.answer_format!r}; choose one of {', '.join(ANSWER_FORMATS)}."
            )
        if self.test_size is not None and not 0 < self.test_size < 1:
            raise StageInputError(f"test_size must be between 0 and 1, got {self.test_size}.")


def read_gold(row: dict, args: ProblemsArguments) -> str | None:
    value = row.get(args.answer_column)
    if args.answer_format == "gsm8k":
        if value is None or "####" not in str(value):
            return None
        return str(value).rsplit("####", 1)[1].strip()
    if args.answer_format == "boxed":
        if value not in (None, ""):
            return str(value).strip()
        solution = row.get(args.solution_column or "", "") or ""
        return extract_final_answer(str(solution))
    return None if value is None else str(value).strip()


def read_difficulty(value) -> int | float | None:
    if value is None or isinstance(value, (int, float)):
        return value
    match = re.search(r"-?\d+(?:\.\d+)?", str(value))
    return None if match is None else float(match.group()) if "." in match.group() else int(match.group())


def to_problem_rows(
    records: list[dict], args: ProblemsArguments, split: str, source_name: str, keep_unreadable: bool = False
) -> list[dict]:
    """Map source records to problem rows; records without a readable gold are dropped (and counted), or kept with
    `answer` None when `keep_unreadable` (evaluation counts them apart)."""
    missing = [c for c in (args.question_column,) if c not in records[0]]
    if args.answer_column not in records[0] and not (args.solution_column and args.solution_column in records[0]):
        missing.append(args.answer_column)
    for optional in (args.id_column, args.difficulty_column):
        if optional and optional not in records[0]:
            missing.append(optional)
    if missing:
        raise StageInputError(f"Source {source_name!r} lacks column(s) {missing}; it has {sorted(records[0])}.")
    rows, unreadable = [], 0
    for index, record in enumerate(records):
        gold = read_gold(record, args)
        if not gold:
            unreadable += 1
            if not keep_unreadable:
                continue
        row = dict(record)
        row.update(
            id=str(record[args.id_column]) if args.id_column else f"{Path(source_name).stem}-{split}-{index:06d}",
            question=str(record[args.question_column]),
            answer=gold or None,
            source=record.get("source", source_name),
            difficulty=read_difficulty(record.get(args.difficulty_column)) if args.difficulty_column else None,
        )
        rows.append(row)
    if unreadable:
        what = "kept (not scored)" if keep_unreadable else "dropped"
        logger.warning("%s/%s: %s %d rows without a readable gold answer.", source_name, split, what, unreadable)
    return rows


def read_problems(source: str, preset: str | None = None, split: str = "test", keep_unreadable: bool = False):
    """Problem rows from a local file or a dataset split, columns mapped by `preset` as the `problems` stage maps them.

    Args:
        source: a local file (.jsonl/.json/.parquet/.csv) or a dataset name for `datasets.load_dataset`.
        preset: one of `PRESETS` (None: the columns are already `question` and `answer`).
        split: the dataset split to read (hub datasets).
        keep_unreadable: keep rows whose gold cannot be read, with `answer` None.
    """
    args = ProblemsArguments(output_dir="", source=source, preset=preset, train_split=split, test_split=None)
    records = load_source(args)["train"]
    return to_problem_rows(records, args, split, source, keep_unreadable=keep_unreadable)


def load_source(args: ProblemsArguments) -> dict[str, list[dict]]:
    """Records per split from a local file or a dataset name."""
    path = Path(args.source)
    if path.suffix in READABLE_SUFFIXES or path.exists():
        dataset = load_dataset_file(path, "Problems file")
        if args.test_size:
            parts = dataset.train_test_split(test_size=args.test_size, seed=args.seed)
            return {"train": parts["train"].to_list(), "test": parts["test"].to_list()}
        return {"train": dataset.to_list()}
    import datasets

    splits = {"train": args.train_split} | ({"test": args.test_split} if args.test_split else {})
    loaded = {}
    for name, split in splits.items():
        try:
            loaded[name] = datasets.load_dataset(args.source, args.dataset_config, split=split).to_list()
        except Exception as error:  # the hub, a script or a bad split: all end here with the same message
            raise StageInputError(f"Cannot load dataset {args.source!r} split {split!r}: {error}") from error
    return loaded


def main(args: ProblemsArguments) -> dict[str, Path]:
    """Write `train.jsonl` (and `test.jsonl`) to `args.output_dir`; returns the paths by split."""
    output_dir = Path(args.output_dir)
    if args.source == "embedded":
        domain = dict(
            seed=args.seed,
            min_steps=args.min_steps,
            max_steps=args.max_steps,
            max_value=args.max_value,
            max_operand=args.max_operand,
        )
        splits = {
            "train": arithmetic.make_problems(args.num_train or 1000, "train", **domain),
            "test": arithmetic.make_problems(args.num_test or 200, "test", **domain),
        }
    else:
        records = load_source(args)
        caps = {"train": args.num_train, "test": args.num_test}
        splits = {
            name: to_problem_rows(rows[: caps[name]] if caps[name] else rows, args, name, args.source)
            for name, rows in records.items()
        }
    paths = {}
    for name, rows in splits.items():
        if not rows:
            raise StageInputError(f"No {name} problems with a readable gold answer in {args.source!r}.")
        paths[name] = write_rows(output_dir / f"{name}.jsonl", rows)
        logger.info("Wrote %d %s problems to %s", len(rows), name, paths[name])
    return paths


def make_parser():
    from cotx_rl.config import make_parser

    return make_parser(ProblemsArguments)


if __name__ == "__main__":
    from cotx_rl.cli import main as cli

    raise SystemExit(cli(["problems", *sys.argv[1:]]))
