"""Files stages exchange: Hugging Face datasets saved as JSONL or Parquet (CSV read too).

Writers go through a temporary file and a rename, so a killed stage never leaves half a file behind; the traces stage
appends to JSONL row by row instead, so that a restart can skip what is already written.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

READABLE_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")
WRITABLE_SUFFIXES = (".jsonl", ".parquet")


class StageInputError(ValueError):
    """Bad input to a stage, found before any work was done."""


def looks_like_local_path(name: str) -> bool:
    """Whether a model name is meant as a local path rather than a hub id such as `Qwen/Qwen3-8B`.

    Explicit paths (`/`, `./`, `../`, `~`) count, and so does a relative path whose first folder exists here
    (`outputs/sft` next to an `outputs/` folder): hub ids rarely collide with a folder in the working directory.
    """
    if name in (".", "..") or name.startswith(("/", "./", "../", "~")):
        return True
    parts = Path(name).parts
    return len(parts) > 1 and Path(parts[0]).exists()


def require_file(path: str | os.PathLike, what: str) -> Path:
    """The path of an existing, readable, non-empty data file, or a `StageInputError` naming it."""
    path = Path(path)
    if not path.exists():
        raise StageInputError(f"{what} {str(path)!r} does not exist.")
    if path.is_dir():
        raise StageInputError(
            f"{what} {str(path)!r} is a directory; expected a file ({', '.join(READABLE_SUFFIXES)})."
        )
    if path.suffix not in READABLE_SUFFIXES:
        raise StageInputError(f"{what} {str(path)!r} has an unknown format; use {', '.join(READABLE_SUFFIXES)}.")
    if path.stat().st_size == 0:
        raise StageInputError(f"{what} {str(path)!r} is empty.")
    return path


def load_dataset_file(path: str | os.PathLike, what: str = "Input file"):
    """A `datasets.Dataset` from a local JSONL, JSON, Parquet or CSV file."""
    import datasets

    path = require_file(path, what)
    builder = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}[path.suffix]
    dataset = datasets.load_dataset(builder, data_files=str(path), split="train")
    if len(dataset) == 0:
        raise StageInputError(f"{what} {str(path)!r} has no rows.")
    return dataset


def read_rows(path: str | os.PathLike, what: str = "Input file") -> list[dict[str, Any]]:
    """Rows of a data file as dicts (JSONL is read line by line; a torn last line from a killed writer is skipped)."""
    path = require_file(path, what)
    if path.suffix != ".jsonl":
        return load_dataset_file(path, what).to_list()
    rows = []
    with path.open(encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as error:
            if number == len(lines):  # a write cut short by a kill: the row is redone on restart
                break
            raise StageInputError(f"{what} {str(path)!r} line {number} is not JSON: {error}") from error
    if not rows:
        raise StageInputError(f"{what} {str(path)!r} has no rows.")
    return rows


def require_columns(rows: list[dict], columns: list[str], what: str) -> None:
    missing = [c for c in columns if c not in rows[0]]
    if missing:
        raise StageInputError(f"{what} lacks column(s) {missing}; it has {sorted(rows[0])}.")


def check_output_path(path: str | os.PathLike, what: str = "Output file") -> Path:
    path = Path(path)
    if path.suffix not in WRITABLE_SUFFIXES:
        raise StageInputError(f"{what} {str(path)!r} must end in {' or '.join(WRITABLE_SUFFIXES)}.")
    return path


def check_writable_dir(path: str | os.PathLike, what: str = "Output folder") -> Path:
    """Create a folder (and its parents) and write a probe file in it: a folder that cannot take a file is a
    `StageInputError` before any work, rather than an error after hours of it."""
    import tempfile

    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-probe-"):
            pass
    except OSError as error:
        raise StageInputError(f"{what} {str(path)!r} is not a writable folder: {error}") from error
    return path


def write_rows(path: str | os.PathLike, rows: list[dict[str, Any]]) -> Path:
    """Write rows atomically as JSONL or Parquet, by suffix."""
    path = check_output_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if path.suffix == ".jsonl":
        with tmp.open("w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    else:
        import datasets

        datasets.Dataset.from_list(rows).to_parquet(str(tmp))
    os.replace(tmp, path)
    return path


def append_rows(path: str | os.PathLike, rows: list[dict[str, Any]]) -> None:
    """Append rows to a JSONL file and flush them to disk, so a kill loses at most the rows not yet appended."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
        handle.flush()
        os.fsync(handle.fileno())


def write_json(path: str | os.PathLike, payload: Any) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def repair_jsonl_tail(path: str | os.PathLike) -> None:
    """Cut a torn last line (a write interrupted by a kill) so that appending starts on a fresh line."""
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if data.endswith(b"\n"):
        return
    with path.open("r+b") as handle:
        handle.truncate(data.rfind(b"\n") + 1)


class JSONDict(dict):
    """A mapping recipe key: a mapping in YAML, a JSON object on the command line (`--models '{"sft": "out"}'`).

    TRL's argument parser calls a field's type on its command-line string, so the type itself parses JSON.
    """

    def __init__(self, value: Any = None):
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as error:
                raise StageInputError(f"Expected a JSON object, got {value!r}: {error}") from error
            if not isinstance(value, dict):
                raise StageInputError(f"Expected a JSON object, got {value!r}.")
        super().__init__(value or {})
