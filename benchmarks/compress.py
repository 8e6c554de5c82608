"""Speed of the `compress` stage on real teacher traces, and how it grows with a trace's length.

1. Each shared real traces file (`../shared/data/real/traces/*.jsonl`), and the three together (about 300 traces),
   through `cotx_rl.compress.main` as a user runs it: the file as it is, the Qwen2.5-Instruct tokenizer of the shared
   folder, the grid 512 1024 2048 4096, `prune` only. Prints traces per second, seconds per slot (a slot is one
   budget of one trace), the share of exact/max slots kept whose budget is at least half the trace's length, and the
   share of traces with an `auto` label.
2. Synthetic traces of about 1k, 4k and 16k tokens, each built from a real trace: its own paragraphs up to the
   conclusion's neighbourhood, then paragraphs of other real traces in between until the length is reached, then its
   own ending. Each one is compressed to every budget of the grid by the stage's per-trace function; prints seconds
   per trace, per slot and per 1k tokens. Linear growth shows as a flat seconds-per-1k-tokens column.

Usage: `python benchmarks/compress.py [--data-dir ../shared/data] [--synthetic 12]`. Run it on a quiet machine: it
prints the load average next to the figures.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"
GRID = [512, 1024, 2048, 4096]
PROPORTIONS = {"exact": 0.45, "max": 0.35, "auto": 0.2}
SYNTHETIC_TOKENS = (1024, 4096, 16384)


def stage_args(traces_path: Path, output_path: Path, tokenizer: str):
    from cotx_rl.compress import CompressArguments

    return CompressArguments(
        traces_path=str(traces_path), output_path=str(output_path), student_tokenizer=tokenizer,
        compressors=["prune"], mode_proportions=PROPORTIONS,
    )  # fmt: skip


def run_file(path: Path, tokenizer: str, folder: Path) -> dict:
    """The stage on one file, end to end (reading, tokenizer, verifier workers included)."""
    from cotx_rl import compress

    start = time.perf_counter()
    from cotx_rl.config import RunArguments

    args = stage_args(path, folder / f"{path.stem}.jsonl", tokenizer)
    stats = compress.main(args, run_args=RunArguments(budget_grid=GRID))
    seconds = time.perf_counter() - start
    half = stats["slots"]["budget_at_least_half_trace"]
    return {
        "name": path.stem.split("__")[0],
        "traces": stats["traces"],
        "slots": stats["traces"] * len(GRID),
        "seconds": seconds,
        "kept_at_least_half": half["kept_share"],
        "auto_labelled": stats["auto_labels"]["labelled_share"],
    }


def synthetic_traces(rows: list[dict], tokenizer, target: int, count: int, rng: random.Random) -> list[dict]:
    """`count` traces of about `target` tokens: a real trace's start, other traces' paragraphs, its own ending."""
    from cotx_rl.budget import count_reasoning_tokens

    filler = [p for row in rows for p in row["reasoning"].split("\n\n") if p.strip()]
    out = []
    for index, row in enumerate(rng.sample(rows, count)):
        paragraphs = row["reasoning"].split("\n\n")
        head, tail = paragraphs[: len(paragraphs) // 3], paragraphs[-3:]
        middle, tokens = [], count_reasoning_tokens("\n\n".join(head + tail), tokenizer)
        while tokens < target:
            paragraph = rng.choice(filler)
            middle.append(paragraph)
            tokens += len(tokenizer(paragraph, add_special_tokens=False)["input_ids"]) + 1
        reasoning = "\n\n".join(head + middle + tail)
        out.append({**row, "id": f"synthetic-{target}-{index}", "reasoning": reasoning})
    return out


def run_synthetic(rows: list[dict], tokenizer_path: str, count: int) -> list[dict]:
    """Per-trace time of the stage's own per-trace function on traces of each synthetic length."""
    from cotx_rl.compress import SlotReport, TraceCompressor, build_compressors, compress_trace
    from cotx_rl.models import load_tokenizer
    from cotx_rl.teachers import TeacherArguments

    tokenizer = load_tokenizer(tokenizer_path)
    args = stage_args(Path("unused.jsonl"), Path("unused.jsonl"), tokenizer_path)
    worker = TraceCompressor(build_compressors(args, TeacherArguments(), tokenizer), tokenizer)
    compress_trace(0, rows[0], args, GRID, worker, Counter(), SlotReport())  # starts the verifier's worker processes
    rng = random.Random(0)
    results = []
    for target in SYNTHETIC_TOKENS:
        traces = synthetic_traces(rows, tokenizer, target, count, rng)
        lengths = [worker.tokens(t["reasoning"]) for t in traces]
        seconds = []
        for index, trace in enumerate(traces):
            start = time.perf_counter()
            compress_trace(index, trace, args, GRID, worker, Counter(), SlotReport())
            seconds.append(time.perf_counter() - start)
        results.append({"target": target, "tokens": statistics.mean(lengths), "seconds": seconds})
    return results


def main(data_dir: Path, synthetic: int) -> None:
    from cotx_rl.trace_rows import load_traces

    logging.getLogger("cotx_rl").setLevel(logging.WARNING)
    traces_dir = data_dir / "real" / "traces"
    tokenizer = str(data_dir / "real" / "tokenizers" / "qwen2.5-instruct")
    files = sorted(traces_dir.glob("*.jsonl"))
    print(f"cpus {os.cpu_count()}, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'traces file':<32}{'traces':>7}{'slots':>7}{'seconds':>9}{'traces/s':>10}{'s/slot':>9}"
          f"{'kept>=half':>12}{'auto':>7}")  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        together = folder / "all_shared_traces.jsonl"
        together.write_text("".join(path.read_text(encoding="utf-8") for path in files), encoding="utf-8")
        for path in [*files, together]:
            row = run_file(path, tokenizer, folder)
            print(
                f"{row['name']:<32}{row['traces']:>7}{row['slots']:>7}{row['seconds']:>9.1f}"
                f"{row['traces'] / row['seconds']:>10.2f}{row['seconds'] / row['slots']:>9.4f}"
                f"{row['kept_at_least_half']:>12}{row['auto_labelled']:>7}"
            )
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if synthetic <= 0:
        return
    rows, _ = load_traces(next(p for p in files if p.name.startswith("DeepSeek-R1")))
    print(f"\nsynthetic traces ({synthetic} per length, built from real paragraphs), per-trace function of the stage")
    print(f"{'target':>8}{'mean tokens':>13}{'s/trace':>10}{'s/slot':>9}{'s per 1k tokens':>17}")
    for row in run_synthetic(rows, tokenizer, synthetic):
        per_trace = statistics.mean(row["seconds"])
        print(
            f"{row['target']:>8}{row['tokens']:>13.0f}{per_trace:>10.3f}{per_trace / len(GRID):>9.4f}"
            f"{per_trace / row['tokens'] * 1000:>17.4f}"
        )
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(json.dumps({"grid": GRID, "mode_proportions": PROPORTIONS}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--synthetic", type=int, default=12, help="Synthetic traces per length (0: none).")
    options = parser.parse_args()
    main(options.data_dir, options.synthetic)
