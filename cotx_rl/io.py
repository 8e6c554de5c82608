"""Files stages exchange: Hugging Face datasets saved as JSONL or Parquet (CSV read too), and the checks of their rows.

Writers go through a temporary file and a rename, so a killed stage never leaves half a file behind; the traces stage
appends to JSONL row by row instead, so that a restart can skip what is already written (it holds an exclusive lock
on the file meanwhile, see [`exclusive_output`]).

Every bad input ends in one `StageInputError` that names the file, the line and the id: [`read_rows`] refuses a line
that is not a JSON object (the last one too) and a line that is not UTF-8; [`require_columns`], [`check_rows`] and
[`check_unique_ids`] check every row, not just the first. The rows [`read_rows`] returns remember their line numbers
([`Rows`]) so that a stage's own checks can name them too. [`check_writable_output`] fails before any work when an
output cannot be written, and a write that fails all the same (a disk filled meanwhile) raises [`OutputWriteError`],
which names the path; the CLI prints both as one line and exits with code 2.
"""

from __future__ import annotations

import contextlib
import json
import logging
import numbers
import os
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

READABLE_SUFFIXES = (".jsonl", ".ndjson", ".json", ".parquet", ".csv")
JSONL_SUFFIXES = (".jsonl", ".ndjson")  # read line by line; `.ndjson` is the same format under another name
WRITABLE_SUFFIXES = (".jsonl", ".parquet")
MIN_FREE_BYTES = 16 * 2**20  # below this a disk is as good as full: even a small JSONL or a report may not fit
LISTED = 5  # how many lines or ids a message lists before it says "and N more"


class StageInputError(ValueError):
    """Bad input to a stage, found before any work was done."""


class OutputWriteError(OSError):
    """An output that could not be written (disk full, no permission, read-only disk): the user's to fix, not a bug.

    `str(error)` is one line that names the path; `errno` and `filename` are those of the `OSError` underneath.
    """

    def __init__(self, path: str | os.PathLike, error: OSError, what: str = "Output file"):
        super().__init__(error.errno, error.strerror or str(error), str(path))
        self.message = (
            f"Cannot write {what} {str(path)!r}: {error.strerror or error}; free some space, fix the permissions or "
            "choose another path."
        )

    def __str__(self) -> str:
        return self.message


class Rows(list):
    """The rows of one data file: a plain list of dicts that remembers where each row came from.

    `line_numbers[i]` is the 1-based line of row `i` in a JSONL file (blank lines hold no row, so numbers may jump), or
    its 1-based row number in a Parquet, CSV or JSON file or a hub dataset (`unit` is then `"row"`). `name` is how
    messages call the file (`"Traces file 'data/traces.jsonl'"`), and `where(i)` names one row of it with its id:
    `"Traces file 'data/traces.jsonl' line 7 (id 'gsm8k-12')"`. Slicing gives a plain list; `select` keeps the numbers.
    """

    def __init__(
        self,
        rows: Iterable[dict] = (),
        line_numbers: Sequence[int] | None = None,
        name: str = "Rows",
        unit: str = "line",
    ):
        super().__init__(rows)
        self.line_numbers = list(line_numbers) if line_numbers is not None else list(range(1, len(self) + 1))
        if len(self.line_numbers) != len(self):
            raise ValueError(f"{len(self.line_numbers)} line numbers for {len(self)} rows.")
        self.name = name
        self.unit = unit

    def where(self, index: int, id_column: str = "id") -> str:
        return describe_row(self, index, id_column=id_column)

    def select(self, indices: Iterable[int]) -> Rows:
        """The rows at `indices`, in that order, with their line numbers."""
        indices = list(indices)
        return Rows([self[i] for i in indices], [self.line_numbers[i] for i in indices], self.name, self.unit)


def describe_row(rows: Sequence[dict], index: int, what: str | None = None, id_column: str = "id") -> str:
    """`"<what> line <n> (id '<id>')"` for row `index`: line numbers from [`Rows`], else the 1-based row number."""
    if isinstance(rows, Rows):
        name, unit, number = rows.name, rows.unit, rows.line_numbers[index]
    else:
        name, unit, number = what or "Rows", "row", index + 1
    text = f"{name} {unit} {number}"
    row = rows[index]
    if isinstance(row, dict) and row.get(id_column) is not None:
        text += f" (id {str(row[id_column])!r})"
    return text


def listing(items: Sequence[Any], unit: str = "line") -> str:
    """`"lines 3, 9 and 12"`, or `"lines 3, 9, 12, 15, 18 and 7 more"` for long lists."""
    items = [str(item) for item in items]
    shown = items[:LISTED]
    rest = len(items) - len(shown)
    if rest:
        return f"{unit}s {', '.join(shown)} and {rest} more"
    if len(shown) == 1:
        return f"{unit} {shown[0]}"
    return f"{unit}s {', '.join(shown[:-1])} and {shown[-1]}"


def looks_like_local_path(name: str) -> bool:
    """Whether a model name is meant as a local path rather than a hub id such as `Qwen/Qwen3-8B`.

    Explicit paths (`/`, `./`, `../`, `~`) count, and so does a relative path whose first folder exists here
    (`outputs/sft` next to an `outputs/` folder): hub ids rarely collide with a folder in the working directory.
    """
    if name in (".", "..") or name.startswith(("/", "./", "../", "~")):
        return True
    parts = Path(name).parts
    return len(parts) > 1 and Path(parts[0]).exists()


def count_drops(rows: Rows, lines_by_reason: dict[str, list[int]], level: int = logging.WARNING) -> Counter:
    """Log the rows dropped from `rows` by reason, naming their lines, and return the count per reason."""
    for reason, lines in lines_by_reason.items():
        logger.log(level, "%s: dropped %d rows as %s (%s).", rows.name, len(lines), reason, listing(lines, rows.unit))
    return Counter({reason: len(lines) for reason, lines in lines_by_reason.items()})


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
    import pyarrow

    path = require_file(path, what)
    builder = {".jsonl": "json", ".ndjson": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}[path.suffix]
    try:
        dataset = datasets.load_dataset(builder, data_files=str(path), split="train")
    except (datasets.exceptions.DatasetGenerationError, pyarrow.ArrowException) as error:  # a malformed file
        cause = error.__cause__ or error
        raise StageInputError(f"{what} {str(path)!r} cannot be read as {path.suffix[1:]}: {cause}") from error
    if len(dataset) == 0:
        raise StageInputError(f"{what} {str(path)!r} has no rows.")
    return dataset


def read_rows(path: str | os.PathLike, what: str = "Input file") -> Rows:
    """Rows of a data file as dicts, with their line numbers ([`Rows`]).

    JSONL is read line by line and nothing in it is skipped but blank lines: a line that is not UTF-8 (a multibyte
    character torn by a kill), not JSON (the last line too) or not a JSON object is a `StageInputError` naming the
    file and the line. (The traces stage cuts a torn tail of its own output before reading it back, with
    [`repair_jsonl_tail`].)
    """
    path = require_file(path, what)
    name = f"{what} {str(path)!r}"
    if path.suffix not in JSONL_SUFFIXES:
        return Rows(load_dataset_file(path, what).to_list(), name=name, unit="row")
    rows, line_numbers = [], []
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, 1):
            rows_line = _parse_jsonl_line(raw, number, name)
            if rows_line is not None:
                rows.append(rows_line)
                line_numbers.append(number)
    if not rows:
        raise StageInputError(f"{name} has no rows.")
    return Rows(rows, line_numbers, name)


def _parse_jsonl_line(raw: bytes, number: int, name: str) -> dict | None:
    """One JSONL line as a row, None for a blank line, or a `StageInputError` naming the line."""
    cut_short = "" if raw.endswith(b"\n") else " (it is the last line and has no line end: a write cut short?)"
    try:
        line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
    except UnicodeDecodeError as error:
        raise StageInputError(
            f"{name} line {number} is not UTF-8 text (byte {error.start + 1} of the line: {error.reason}){cut_short}; "
            "repair or remove that line, or convert the file to UTF-8."
        ) from None
    if not line.strip():
        return None
    try:
        row = json.loads(line)
    except json.JSONDecodeError as error:
        raise StageInputError(
            # removesuffix: json's "Unterminated string starting at" would read "starting at at column".
            f"{name} line {number} is not JSON ({error.msg.removesuffix(' at')} at column {error.colno}){cut_short}; "
            "repair or remove that line."
        ) from None
    if not isinstance(row, dict):
        shown = line.strip() if len(line.strip()) <= 40 else line.strip()[:37] + "..."
        raise StageInputError(
            f"{name} line {number} holds a JSON {type(row).__name__} ({shown}), not an object; write one row per "
            "line as a JSON object."
        )
    return row


def _describe_value(value: Any) -> str:
    """`null`, `empty`, `'text'`, or the kind of a value that is not text: `a number (5)`, `a list ([1, 2])`."""
    if value is None:
        return "null"
    if isinstance(value, str):
        return "empty" if not value.strip() else repr(value)
    kind = {bool: "a boolean", list: "a list", dict: "an object"}.get(type(value))
    kind = kind or ("a number" if isinstance(value, numbers.Number) else f"a {type(value).__name__}")
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
    return f"{kind} ({shown}), not text"


def refuse_rows(rows: Sequence[dict], bad: list[tuple[int, str]], advice: str, what: str | None = None) -> None:
    """Raise one `StageInputError` for the first of `bad` (row index, what is wrong), counting the others."""
    if not bad:
        return
    index, problem = bad[0]
    more = f" ({len(bad) - 1} more bad rows)" if len(bad) > 1 else ""
    raise StageInputError(f"{describe_row(rows, index, what)}: {problem}; {advice}{more}.")


def require_columns(rows: Sequence[dict], columns: Sequence[str], what: str | None = None) -> None:
    """Every row has every one of `columns` (a key; its value may be null), or a `StageInputError` naming the first
    row without one by file, line and id."""
    bad = []
    for index, row in enumerate(rows):
        missing = [c for c in columns if c not in row]
        if missing:
            bad.append((index, f"lacks column(s) {missing} (it has {sorted(row)})"))
    refuse_rows(rows, bad, f"every row needs {list(columns)}", what)


def check_rows(
    rows: Sequence[dict],
    columns: Sequence[str],
    text_columns: Sequence[str] = (),
    nullable: Sequence[str] = (),
    what: str | None = None,
) -> None:
    """Check every row: each of `columns` is there and not null (unless in `nullable`), each of `text_columns` holds
    non-empty text. The first bad row is named (file, line, id, column, value) in one `StageInputError`, which also
    counts the other bad rows.
    """
    require_columns(rows, [*columns, *(c for c in text_columns if c not in columns)], what)
    bad = []
    for index, row in enumerate(rows):
        problems = [f"{c} is null" for c in columns if row[c] is None and c not in nullable and c not in text_columns]
        problems += [
            f"{c} is {_describe_value(row[c])}"
            for c in text_columns
            if not isinstance(row[c], str) or not row[c].strip()
        ]
        if problems:
            bad.append((index, problems[0]))
    refuse_rows(rows, bad, "fill it in or remove the row", what)


def _hashable(value: Any) -> Any:
    try:
        hash(value)
    except TypeError:
        return repr(value)
    return value


def duplicate_ids(
    rows: Sequence[dict], column: str = "id", key: Callable[[dict], Any] | None = None
) -> dict[Any, list[int]]:
    """Ids that occur more than once, each with the line numbers (or 1-based row numbers) it occurs on, in file
    order. Rows without the column are left out. `key` makes the id of a row from several columns (for example the
    problem id and the sample index of a trace)."""
    line_numbers = rows.line_numbers if isinstance(rows, Rows) else range(1, len(rows) + 1)
    seen: dict[Any, list[int]] = {}
    for row, number in zip(rows, line_numbers):
        value = key(row) if key is not None else row.get(column)
        if value is not None:
            seen.setdefault(_hashable(value), []).append(number)
    return {value: lines for value, lines in seen.items() if len(lines) > 1}


def describe_duplicates(duplicates: dict[Any, list[int]], unit: str = "line") -> str:
    """`"id 'a' on lines 3 and 9 (and 4 more ids)"`: the first repeated id, where it is, and how many more."""
    key, lines = next(iter(duplicates.items()))
    more = f" (and {len(duplicates) - 1} more repeated ids)" if len(duplicates) > 1 else ""
    return f"id {str(key)!r} on {listing(lines, unit)}{more}"


def check_unique_ids(
    rows: Sequence[dict], what: str | None = None, column: str = "id", key: Callable[[dict], Any] | None = None
) -> None:
    """Refuse repeated ids with one `StageInputError` naming the first repeated id and its lines."""
    duplicates = duplicate_ids(rows, column, key)
    if duplicates:
        name = rows.name if isinstance(rows, Rows) else what or "Rows"
        unit = rows.unit if isinstance(rows, Rows) else "row"
        raise StageInputError(
            f"{name} repeats {describe_duplicates(duplicates, unit)}; ids must be unique: keep one row per id."
        )


def gold_text(value: Any) -> str | None:
    """A gold answer as text: strings stripped, numbers (`42`, `0.5` in JSON) as their decimal spelling; None when
    there is no readable gold (null, empty, or another type such as a list or a boolean)."""
    if isinstance(value, numbers.Number) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        return None
    return value.strip()


def check_output_path(path: str | os.PathLike, what: str = "Output file") -> Path:
    path = Path(path)
    if path.suffix not in WRITABLE_SUFFIXES:
        raise StageInputError(f"{what} {str(path)!r} must end in {' or '.join(WRITABLE_SUFFIXES)}.")
    return path


def check_writable_output(
    path: str | os.PathLike,
    what: str = "Output file",
    folder: bool = False,
    append: bool = False,
    min_free_bytes: int = MIN_FREE_BYTES,
) -> Path:
    """Fail before any work when an output file (or, with `folder`, an output folder) cannot be written.

    Checks, without creating anything that stays: that no file stands where a folder should be (or a folder where
    the file should be), that a file can be created in the nearest existing folder on the way (a read-only folder or
    disk fails here), that an existing file can be appended to (with `append`), and that the disk has at least
    `min_free_bytes` free (`os.statvfs`). Each failure is a `StageInputError` naming the path.
    """
    path = Path(path).expanduser()
    if path.exists() and folder and not path.is_dir():
        raise StageInputError(f"{what} {str(path)!r} is a file, not a folder; remove it or choose another path.")
    if path.exists() and not folder and path.is_dir():
        raise StageInputError(f"{what} {str(path)!r} is a folder, not a file; choose a file path.")
    existing = path if folder else path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise StageInputError(
            f"{what} {str(path)!r} cannot be created: {str(existing)!r} is a file where a folder should be; remove it "
            "or choose another path."
        )
    try:
        handle, probe = tempfile.mkstemp(dir=existing, prefix=".cotx-write-check-")
        os.close(handle)
        os.unlink(probe)
        if append and path.is_file():
            with path.open("ab"):
                pass
    except OSError as error:
        raise StageInputError(
            f"{what} {str(path)!r} cannot be written ({error.strerror or error} in {str(existing)!r}); fix the "
            "permissions or choose another path."
        ) from None
    stats = os.statvfs(existing)
    free_bytes = stats.f_bavail * stats.f_frsize
    if free_bytes < min_free_bytes:
        raise StageInputError(
            f"{what} {str(path)!r} cannot be written: only {free_bytes / 2**20:.1f} MiB free on the disk of "
            f"{str(existing)!r} (at least {min_free_bytes / 2**20:.0f} MiB needed); free some space or choose another "
            "path."
        )
    return path


@contextlib.contextmanager
def exclusive_output(path: str | os.PathLike, what: str = "Output file") -> Iterator[Path]:
    """Hold an exclusive lock on `<path>.lock` while a run appends to `path`; a second run fails at once.

    Two runs appending to one file would both write the rows neither had seen yet. The lock (`fcntl.flock`) is
    released by the system when the process ends, however it ends; the empty `.lock` file stays, because deleting it
    while another run waits on it would let a third run in beside it.
    """
    import fcntl

    path = Path(path)
    lock_path = path.with_name(path.name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StageInputError(
                f"{what} {str(path)!r} is being written by another run (it holds {str(lock_path)!r}); wait for that "
                "run to end or choose another path."
            ) from None
        try:
            yield path
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write_atomically(path: Path, write: Callable[[Path], None], what: str) -> Path:
    """Write through `<path>.tmp` and a rename; on failure the old file is untouched and no `.tmp` is left."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        os.replace(tmp, path)
    except OSError as error:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise OutputWriteError(path, error, what) from error
    return path


def write_rows(path: str | os.PathLike, rows: list[dict[str, Any]], what: str = "Output file") -> Path:
    """Write rows atomically as JSONL or Parquet, by suffix."""
    path = check_output_path(path, what)

    def write(tmp: Path) -> None:
        if path.suffix == ".jsonl":
            with tmp.open("w", encoding="utf-8") as handle:
                for row in rows:
                    handle.write(json.dumps(row, ensure_ascii=False) + "\n")
                handle.flush()
                os.fsync(handle.fileno())  # a full disk shows here, before the rename, not later
        else:
            import datasets

            datasets.Dataset.from_list(rows).to_parquet(str(tmp))

    return _write_atomically(path, write, what)


def append_rows(path: str | os.PathLike, rows: list[dict[str, Any]], what: str = "Output file") -> None:
    """Append rows to a JSONL file and flush them to disk, so a kill loses at most the rows not yet appended."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as handle:
            handle.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as error:
        raise OutputWriteError(path, error, what) from error


def write_json(path: str | os.PathLike, payload: Any, what: str = "Output file") -> Path:
    path = Path(path)
    text = json.dumps(payload, indent=2, ensure_ascii=False) + "\n"
    return _write_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), what)


def repair_jsonl_tail(path: str | os.PathLike) -> bytes:
    """Cut a torn last line (a write interrupted by a kill) so that appending starts on a fresh line.

    Returns the bytes cut (empty when the file ends with a line end), for the caller to report.
    """
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return b""
    data = path.read_bytes()
    if data.endswith(b"\n"):
        return b""
    keep = data.rfind(b"\n") + 1
    with path.open("r+b") as handle:
        handle.truncate(keep)
    return data[keep:]


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
