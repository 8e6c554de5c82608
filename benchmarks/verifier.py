"""Agreement and speed of `correctness_reward` against Math-Verify on the shared verifier test cases.

For every case of `verifier_cases_mathverify.jsonl` and `verifier_cases_other_graders.jsonl` (in `../shared/data`),
both verifiers judge whether `pred` (a completion text) answers `gold`:

- ours: `correctness_reward.score([gold], [pred])`, one pair per call, so that each pair is timed on its own (pairs
  that need sympy make one round trip to the warm worker pool);
- Math-Verify (when installed): `verify(parse(gold), parse(pred))` with its defaults.

A case agrees when the verdict equals the case's `expected` label. Prints agreement per file, the median and 99th
percentile of seconds per pair, Math-Verify's times over ours, and how many of our comparisons timed out or failed.
Usage: `python benchmarks/verifier.py`.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from rewards import correctness_reward

CASE_FILES = ("verifier_cases_mathverify.jsonl", "verifier_cases_other_graders.jsonl")
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def load_cases(path: Path) -> list[dict]:
    with path.open() as handle:
        return [json.loads(line) for line in handle if line.strip()]


def ours(gold: str, pred: str) -> bool:
    return correctness_reward.score([gold], [pred])[0] == 1.0


def math_verify_judge() -> Callable[[str, str], bool] | None:
    try:
        from math_verify import parse, verify
    except ImportError:
        return None
    # Math-Verify logs a warning for every comparison that times out; keep the table readable.
    logging.getLogger("math_verify").setLevel(logging.ERROR)

    def judge(gold: str, pred: str) -> bool:
        return bool(verify(parse(gold), parse(pred)))

    return judge


def run(judge: Callable[[str, str], bool], cases: list[dict]) -> tuple[float, list[float]]:
    """Agreement with the labels and seconds per pair."""
    agreed, seconds = 0, []
    for case in cases:
        start = time.perf_counter()
        verdict = judge(case["gold"], case["pred"])
        seconds.append(time.perf_counter() - start)
        agreed += verdict == case["expected"]
    return agreed / len(cases), seconds


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def main(data_dir: Path) -> None:
    math_verify = math_verify_judge()
    judges = {"ours": ours}
    if math_verify is not None:
        judges["math-verify"] = math_verify
    else:
        print("math-verify is not installed: reporting ours only.")
    # Start the worker pool and compile Math-Verify's regexes before timing anything.
    for judge in judges.values():
        judge("\\frac{1}{2}", "The answer is $x^2 + 0.5 - x^2$.")

    header = f"{'file':38} {'verifier':12} {'agree':>13} {'median s':>10} {'p99 s':>10}"
    print(header)
    print("-" * len(header))
    for name in CASE_FILES:
        cases = load_cases(data_dir / name)
        stats = {}
        for label, judge in judges.items():
            agreement, seconds = run(judge, cases)
            stats[label] = (statistics.median(seconds), p99(seconds))
            count = round(agreement * len(cases))
            print(
                f"{name:38} {label:12} {count:>4}/{len(cases):<3} {agreement:5.1%} "
                f"{stats[label][0]:10.6f} {stats[label][1]:10.6f}"
            )
        if "math-verify" in stats:
            (mv_median, mv_p99), (our_median, our_p99) = stats["math-verify"], stats["ours"]
            ratio = f"{mv_median / our_median:.1f}x {mv_p99 / our_p99:.1f}x"
            print(f"{name:38} {'ratio math-verify / ours':>26} {ratio:>21}")
    # A timed-out comparison scores 0.0 and any other verifier failure None: either would bias the agreement above.
    failures = ", ".join(f"{kind} {count}" for kind, count in sorted(correctness_reward.failures.items()))
    print(f"comparisons ours did not finish: {failures or 'none'}")
    correctness_reward.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    main(parser.parse_args().data_dir)
