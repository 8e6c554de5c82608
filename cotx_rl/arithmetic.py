"""The embedded domain: chain arithmetic with graded difficulty.

A problem is a start value and `k` operations of +/- one digit, computed left to right (`Compute 23 - 4 + 7 - 2.`);
its difficulty is `k`. Every running value stays in `[0, max_value]`, so each step is one fact of a small addition
table that a tiny student can learn, while answering without writing the steps means chaining `k` facts in one
forward pass, which a tiny student cannot do for large `k`.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass

SOURCE = "embedded-arithmetic"
_QUESTION_RE = re.compile(r"Compute (\d+)((?: [+-] \d+)+)\.")
_OP_RE = re.compile(r" ([+-]) (\d+)")


@dataclass(frozen=True)
class ChainProblem:
    start: int
    ops: tuple[tuple[str, int], ...]

    @property
    def steps(self) -> int:
        return len(self.ops)

    def values(self) -> list[int]:
        """The running values after each operation."""
        out, value = [], self.start
        for sign, operand in self.ops:
            value = apply_op(value, sign, operand)
            out.append(value)
        return out

    @property
    def answer(self) -> int:
        return self.values()[-1]

    def expression(self, first: int = 0, last: int | None = None) -> str:
        """The operations `first..last` as text, starting from the running value before `first`."""
        last = self.steps if last is None else last
        start = self.start if first == 0 else self.values()[first - 1]
        return str(start) + "".join(f" {sign} {operand}" for sign, operand in self.ops[first:last])

    @property
    def question(self) -> str:
        return f"Compute {self.expression()}."


def apply_op(value: int, sign: str, operand: int) -> int:
    return value + operand if sign == "+" else value - operand


def parse_question(question: str) -> ChainProblem | None:
    """The problem behind a question of this domain, or None when the text is not one."""
    match = _QUESTION_RE.search(question)
    if match is None:
        return None
    ops = tuple((sign, int(n)) for sign, n in _OP_RE.findall(match.group(2)))
    return ChainProblem(int(match.group(1)), ops)


def random_problem(rng: random.Random, steps: int, max_value: int = 99, max_operand: int = 9) -> ChainProblem:
    value = rng.randint(max_operand, max_value - max_operand)
    start, ops = value, []
    for _ in range(steps):
        operand = rng.randint(1, max_operand)
        can_add, can_sub = value + operand <= max_value, value - operand >= 0
        sign = rng.choice("+-") if can_add and can_sub else ("+" if can_add else "-")
        value = apply_op(value, sign, operand)
        ops.append((sign, operand))
    return ChainProblem(start, tuple(ops))


def split_of(question: str, test_fraction: float) -> str:
    """A split that depends on the question text only, so train and test never share a problem."""
    digest = int(hashlib.sha256(question.encode()).hexdigest()[:8], 16)
    return "test" if digest / 0xFFFFFFFF < test_fraction else "train"


def make_problems(
    num_problems: int,
    split: str,
    seed: int = 0,
    min_steps: int = 1,
    max_steps: int = 6,
    max_value: int = 99,
    max_operand: int = 9,
    test_fraction: float = 0.1,
) -> list[dict]:
    """`num_problems` distinct problems of one split, difficulty spread evenly over `min_steps..max_steps`.

    Deterministic for a seed; the split is decided by a hash of the question, so the same seed gives disjoint train
    and test sets.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}.")
    if not 1 <= min_steps <= max_steps:
        raise ValueError(f"Need 1 <= min_steps <= max_steps, got min_steps={min_steps}, max_steps={max_steps}.")
    rng = random.Random(f"{seed}-{split}")
    rows, seen = [], set()
    levels = list(range(min_steps, max_steps + 1))
    attempts = 0
    while len(rows) < num_problems:
        attempts += 1
        if attempts > 100 * num_problems + 1000:
            raise ValueError(
                f"Could only find {len(rows)} distinct {split} problems of {num_problems} asked for; "
                "raise max_steps or lower num_problems."
            )
        steps = levels[len(rows) % len(levels)]
        problem = random_problem(rng, steps, max_value, max_operand)
        question = problem.question
        if question in seen or split_of(question, test_fraction) != split:
            continue
        seen.add(question)
        rows.append(
            {
                "id": f"{SOURCE}-{split}-{len(rows):06d}",
                "question": question,
                "answer": str(problem.answer),
                "source": SOURCE,
                "difficulty": steps,
            }
        )
    return rows


_CHAIN_EQUATION = re.compile(r"(\d+(?: [+-] \d+)+) = (\d+)")


def chain_support(steps: list[str], problem: ChainProblem) -> set[int] | None:
    """The steps that carry the problem's chain from the start value to the answer, or None when it breaks.

    Walks the operations in order: a step carries the chain when it writes the run of operations that comes next,
    starting at the current value, with the right result (`61 - 8 - 7 = 46` may carry several operations at once).
    Checks and repeats of a step already carried do not count; every operation must be carried.
    """
    values = problem.values()
    done, support = 0, set()
    for index, step in enumerate(steps):
        for lhs, rhs in _CHAIN_EQUATION.findall(step):
            for last in range(done + 1, problem.steps + 1):
                if lhs == problem.expression(done, last) and int(rhs) == values[last - 1]:
                    done = last
                    support.add(index)
                    break
        if done == problem.steps:
            break
    if done < problem.steps:
        return None
    conclusion = next(
        (i for i in range(len(steps) - 1, -1, -1) if str(problem.answer) in re.findall(r"\d+", steps[i])), None
    )
    conclusion = conclusion if conclusion is not None else max(support)
    return support | {conclusion}
