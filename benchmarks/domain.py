"""Does reasoning length matter in the embedded domain? Accuracy by difficulty, with and without reasoning.

Two students of the same size on the same problems:

- the budget student of a finished tiny pipeline run (`outputs/tiny/sft`, trained by `recipes/tiny/sft.yaml`),
  asked for its full reasoning (`max` mode at the largest budget);
- an answer-only student: the budget student fine-tuned here on the same kept traces with the thought replaced by a
  fixed `ANSWER_ONLY_THOUGHT` (the SFT stage refuses an empty one), so that it knows the same arithmetic but must
  answer at once.

Prints accuracy per difficulty level for both, the budget student's training time (from the run's `timings.json`)
and the answer-only student's. Run after `cotx-rl pipeline --config recipes/tiny/pipeline.yaml`:

    python benchmarks/domain.py --run_dir outputs/tiny
"""

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

from cotx_rl import sft
from cotx_rl.budget import render_prompt
from cotx_rl.config import RunArguments
from cotx_rl.eval import EvalArguments, Student
from cotx_rl.io import read_rows, write_rows


def accuracy_by_level(student: Student, rows: list[dict], mode, budget) -> dict:
    """Accuracy in percent per difficulty level, over the problems whose gold can be read."""
    levels = defaultdict(list)
    for record in student.run(rows, mode, budget):
        if record["correct"] is not None:
            levels[record["difficulty"]].append(record["correct"])
    return {level: 100 * sum(v) / len(v) for level, v in sorted(levels.items())}


# The whole thought of the answer-only student: a few fixed tokens, no computation.
ANSWER_ONLY_THOUGHT = "I answer at once."


def train_answer_only(run_dir: Path, epochs: int) -> tuple[Path, float]:
    kept = read_rows(run_dir / "kept_traces.jsonl")
    data = run_dir / "benchmark" / "answer_only.jsonl"
    write_rows(data, [{**row, "reasoning": ANSWER_ONLY_THOUGHT} for row in kept])
    output = run_dir / "benchmark" / "answer_only"
    argv = [
        # As the full-CoT baseline: continue from the budget student, so that both know the same arithmetic and differ
        # only in how much they may write before the answer.
        "--config", "recipes/tiny/full_cot.yaml", "--model_name_or_path", str(run_dir / "sft"),
        "--dataset_path", str(data), "--output_dir", str(output),
        "--num_train_epochs", str(epochs), "--max_length", "64", "--report_to", "none", "--save_strategy", "no",
    ]  # fmt: skip
    started = time.perf_counter()
    sft.main(*sft.make_parser().parse_args_and_config(argv))
    return output, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run_dir", default="outputs/tiny", help="A finished tiny pipeline run.")
    parser.add_argument("--answer_only_epochs", type=int, default=3)
    args = parser.parse_args()
    run_dir = Path(args.run_dir)
    rows = read_rows(run_dir / "problems" / "test.jsonl")
    grid = json.loads((run_dir / "compress_stats.json").read_text())["budget_grid"]
    settings = EvalArguments(
        test_path="-", output_dir=str(run_dir / "benchmark"), models={"sft": "-"}, max_new_tokens=160
    )

    run_settings = RunArguments(budget_grid=grid)
    budget_student = Student("sft", str(run_dir / "sft"), settings, run_settings)
    with_reasoning = accuracy_by_level(budget_student, rows, "max", max(grid))
    answer_only_path, answer_only_seconds = train_answer_only(run_dir, args.answer_only_epochs)
    answer_only = Student("answer_only", str(answer_only_path), settings, run_settings)
    without = accuracy_by_level(answer_only, rows, None, None)
    timings = json.loads((run_dir / "timings.json").read_text())

    print(
        f"embedded domain, {len(rows)} test problems, greedy; prompt example: {render_prompt(rows[0]['question'], 'max', max(grid))!r}"
    )
    print(f"{'difficulty (steps)':<20}" + "".join(f"{level:>8}" for level in with_reasoning) + f"{'all':>8}")
    for name, scores in ((f"reasoning (max {max(grid)})", with_reasoning), ("answer only", without)):
        overall = sum(scores.values()) / len(scores)
        print(f"{name:<20}" + "".join(f"{v:>7.1f}%" for v in scores.values()) + f"{overall:>7.1f}%")
    print(
        f"budget student SFT: {timings.get('sft', float('nan')):.0f} s; answer-only student: {answer_only_seconds:.0f} s"
    )


if __name__ == "__main__":
    main()
