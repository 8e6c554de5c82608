"""Answer-correctness reward: 1.0 when a completion's final answer equals the gold answer, 0.0 otherwise.

Pipeline for each (gold, completion) pair:

1. Extract the final answer of the completion and of the gold (`extract_final_answer`): the last `\\boxed{}`, a
   `#### n` line, "the final answer is ...", "Answer: ...", and a few fallbacks.
2. Decide in this process, without sympy, the pairs that need no algebra: the same spelling, two plain numbers
   (`7,425,000`, `\\frac{3}{4}`, `50\\%`, `5 cm`, `x = 5`) or plain-text answers. Most GSM8K-style answers stop here.
3. Send the remaining pairs to a persistent pool of worker processes, where latex2sympy2_extended and sympy compare
   them (`rewards._math_equal`) under a hard per-item deadline and a deadline for the batch (`rewards._pool`). An item
   that runs past its own deadline scores 0.0; an item the workers could not judge scores None (see
   `CorrectnessReward`).

Model text is untrusted: it is never evaluated as Python in either process. See `rewards._math_equal`.
"""

from __future__ import annotations

import logging
import numbers
import os
import threading
import weakref
from collections import Counter
from collections.abc import Sequence
from typing import Any

from rewards._answers import (
    canonical_spelling,
    compare_plain_numbers,
    compare_text,
    extract_final_answer,
    extract_gold_answer,
)
from rewards._pool import Failure, WorkerPool, WorkerStartError
from rewards.completions import broadcast, completion_text

__all__ = [
    "CorrectnessReward",
    "WorkerStartError",
    "answers_match",
    "correctness_reward",
    "extract_final_answer",
]

logger = logging.getLogger(__name__)
UNREADABLE_GOLD = "unreadable_gold"

_WORKER_MODULE = "rewards._math_equal"
# Outcomes that are a verdict on the answer (comparing it costs more than any answer may), not a failure to judge it.
_VERDICTS = frozenset({Failure.TIMED_OUT, Failure.OUT_OF_MEMORY})


# The three functions the workers run; this process imports sympy for none of them.
def _compare_in_worker(gold: str, pred: str) -> float | None:
    from rewards._math_equal import compare_answers

    return compare_answers(gold, pred)


def _warm_up_zygote() -> None:
    from rewards._math_equal import warm_up

    warm_up()


def _guard_worker() -> None:
    from rewards._math_equal import guard_worker

    guard_worker()


def _as_text(gold: Any) -> str | None:
    """Gold answers are strings, but a dataset column of numbers (72, 0.5) is read as their decimal spelling."""
    if isinstance(gold, str):
        return gold
    if isinstance(gold, numbers.Number) and not isinstance(gold, bool):
        return str(gold)
    return None


def fast_compare(gold_answer: str, pred_answer: str) -> bool | None:
    """Decide a pair of extracted answers without computer algebra, or return None when that needs sympy."""
    if canonical_spelling(gold_answer) == canonical_spelling(pred_answer):
        return True
    as_numbers = compare_plain_numbers(gold_answer, pred_answer)
    if as_numbers is not None:
        return as_numbers
    return compare_text(gold_answer, pred_answer)


class CorrectnessReward:
    """Reward for a correct final answer, with TRL's reward-function signature.

    Returns, per completion, 1.0 when its final answer is mathematically equal to the gold answer, 0.0 when it is
    not (including when no answer can be found in it, and when comparing takes longer than `timeout_seconds` or more
    memory than `memory_limit_mb`), and None when the pair could not be judged (TRL then skips that reward for the
    sample): when the gold answer itself cannot be read or parsed, and when the verifier failed (see below).

    Equality covers integers and decimals (thousands separators, `1000.0`, `.5`), fractions, percentages, radicals,
    powers, pi and e, units and `\\text{}`, `x = 5` against `5`, symbolic expressions, equations and inequalities,
    intervals (bracket type matters), sets (unordered; a bare `1, 2` is a set), tuples (ordered), matrices and plain
    text (case-insensitive). Numbers are never rescaled: 5 is not 500 or 0.05, while `50\\%` equals 0.5 and 1/2 (and,
    as in Math-Verify, an integer percentage also equals its bare number: `28\\%` = 28). Exact values compare exactly
    (16386.17 is not 16386.16, 10^11 is not 10^11 - 1); a decimal that approximates a value with no finite decimal
    expansion (0.333333 for 1/3, 1.414214 for sqrt(2)) compares with relative tolerance 1e-6.

    Verifier failures are never scored as wrong answers. A pair whose comparison raised (`"error"`), whose worker
    process died (`"worker_died"`), for which no worker could be started (`"start_failed"`) or that was not judged
    before the call used up its time for slow comparisons (`"batch_timeout"`, see `batch_timeout_seconds`) scores
    None. Each call with failures logs one warning with their counts, and adds them, per completion, to the `failures`
    counter, next to the verdicts `"timed_out"` and `"out_of_memory"` (which score 0.0). Called by TRL, it also logs
    `correctness/unverified` (completions scored None by a failure) and `correctness/timed_out` through `log_metric`.
    When no worker process can be started at all (for example sympy cannot be imported), the call raises
    `WorkerStartError`, a `RuntimeError`, with the reason.

    No process is started until a batch contains a pair that needs symbolic comparison. Workers are forked from a
    fresh interpreter that never imports the caller's `__main__`, so scripts need no `if __name__ == "__main__":`
    guard; the reward is safe to use from threads and from forked processes (a child starts its own workers). The
    object can be pickled; its worker pool is not sent along but started again, lazily, where it is unpickled.

    Args:
        timeout_seconds (`float`, defaults to 2.0):
            Deadline for the symbolic comparison of one pair; the worker is killed when it passes.
        num_workers (`int`, *optional*):
            Number of worker processes. Defaults to the number of CPUs, at most 4.
        memory_limit_mb (`int`, *optional*, defaults to 4096):
            Address-space limit of each worker, against answers such as `10^{10^{10}}!`. None: no limit.
        batch_timeout_seconds (`float`, *optional*):
            Time one call may lose to slow comparisons, in all: the running time of the comparisons that time out or
            are still running, summed over the workers and divided by their number. When it is used up, the pairs not
            judged yet score None. Finished comparisons do not count, so a large batch of ordinary pairs is never cut,
            while many hostile answers cost about this long rather than `timeout_seconds` each. Defaults to
            `3 * timeout_seconds`.

    Example:
        ```python
        >>> from rewards import correctness_reward
        >>> correctness_reward(["... so the answer is \\\\boxed{\\\\frac{1}{2}}", "#### 0.4"], answer=["0.5", "0.5"])
        [1.0, 0.0]
        ```
    """

    def __init__(
        self,
        timeout_seconds: float = 2.0,
        num_workers: int | None = None,
        memory_limit_mb: int | None = 4096,
        batch_timeout_seconds: float | None = None,
    ):
        if timeout_seconds <= 0:
            raise ValueError("timeout_seconds must be positive")
        if batch_timeout_seconds is not None and batch_timeout_seconds <= 0:
            raise ValueError("batch_timeout_seconds must be positive")
        self.__name__ = "correctness_reward"
        self.timeout_seconds = timeout_seconds
        self.num_workers = num_workers or max(1, min(4, os.cpu_count() or 1))
        self.memory_limit_mb = memory_limit_mb
        self.batch_timeout_seconds = batch_timeout_seconds or 3 * timeout_seconds
        self.failures: Counter[str] = Counter()
        self._pool: WorkerPool | None = None
        self._pool_lock = threading.Lock()
        _REWARDS.add(self)

    def __call__(self, completions: list[Any], answer: Any, **kwargs: Any) -> list[float | None]:
        """Score completions (strings or chat messages) against the `answer` column (one gold per completion)."""
        texts = [completion_text(c) for c in completions]
        golds = broadcast(answer, len(texts), "answer")
        scores, _, failures = self._score(golds, texts)
        log_metric = kwargs.get("log_metric")
        if log_metric is not None:  # TRL's hook: averaged over the logging steps
            log_metric("correctness/unverified", float(sum(n for k, n in failures.items() if k not in _VERDICT_NAMES)))
            log_metric("correctness/timed_out", float(failures[Failure.TIMED_OUT.value]))
        return scores

    def score(self, golds: Sequence[Any], texts: Sequence[str]) -> list[float | None]:
        """Score completion texts against gold answers; the batch API that `__call__` and other rewards use.

        Args:
            golds (`Sequence[str]`):
                One gold answer per text: a bare answer (`"72"`, `"\\\\frac{1}{2}"`) or a solution with a box.
            texts (`Sequence[str]`):
                Completion texts.

        Returns:
            `list[float | None]`: 1.0, 0.0, or None (unreadable gold, or a verifier failure) per pair.

        Raises:
            `WorkerStartError`: when symbolic comparison is needed and no worker process can be started.
        """
        return self._score(golds, texts)[0]

    def score_with_reasons(self, golds: Sequence[Any], texts: Sequence[str]) -> tuple[list[float | None], list]:
        """[`score`], and why each None is None: `"unreadable_gold"` when the gold cannot be read, else the verifier
        failure (`"error"`, `"worker_died"`, `"start_failed"`, `"batch_timeout"`); None beside every real score."""
        scores, reasons, _ = self._score(golds, texts)
        return scores, reasons

    def _score(
        self, golds: Sequence[Any], texts: Sequence[str]
    ) -> tuple[list[float | None], list[str | None], Counter[str]]:
        """Scores, why each None is None, and the failures of this call counted per completion."""
        if len(golds) != len(texts):
            raise ValueError(f"Got {len(golds)} gold answers for {len(texts)} completions.")
        scores: list[float | None] = [None] * len(texts)
        reasons: list[str | None] = [None] * len(texts)
        symbolic: dict[tuple[str, str], list[int]] = {}
        for index, (gold, text) in enumerate(zip(golds, texts)):
            gold_answer = extract_gold_answer(_as_text(gold))
            if gold_answer is None:
                reasons[index] = UNREADABLE_GOLD
                continue
            pred_answer = extract_final_answer(text) if isinstance(text, str) else None
            if pred_answer is None:
                scores[index] = 0.0
                continue
            decided = fast_compare(gold_answer, pred_answer)
            if decided is not None:
                scores[index] = float(decided)
            else:
                # Identical pairs (a GRPO group repeating itself) are compared once.
                symbolic.setdefault((gold_answer, pred_answer), []).append(index)
        failures: Counter[str] = Counter()
        if not symbolic:
            return scores, reasons, failures
        pairs = list(symbolic)
        outcomes = self._get_pool().map(pairs)
        for pair, outcome in zip(pairs, outcomes):
            reason = UNREADABLE_GOLD if outcome is None else None  # the worker could not parse the gold
            if isinstance(outcome, Failure):
                failures[outcome.value] += len(symbolic[pair])
                reason = None if outcome in _VERDICTS else outcome.value
                outcome = 0.0 if outcome in _VERDICTS else None
            for index in symbolic[pair]:
                scores[index], reasons[index] = outcome, reason
        if failures:
            self._report(failures, len(texts))
        return scores, reasons, failures

    def _report(self, failures: Counter[str], total: int) -> None:
        with self._pool_lock:
            self.failures.update(failures)
        unverified = {kind: count for kind, count in failures.items() if kind not in _VERDICT_NAMES}
        if unverified:
            logger.warning(
                "%d of %d completions could not be verified and score None (%s).",
                sum(unverified.values()),
                total,
                ", ".join(f"{kind}: {count}" for kind, count in sorted(unverified.items())),
            )
        verdicts = {kind: count for kind, count in failures.items() if kind in _VERDICT_NAMES}
        if verdicts:
            logger.info(
                "%d of %d completions took too long or too much memory to compare and score 0.0 (%s).",
                sum(verdicts.values()),
                total,
                ", ".join(f"{kind}: {count}" for kind, count in sorted(verdicts.items())),
            )

    def close(self) -> None:
        """Stop the worker processes (they are started again if the reward is used afterwards)."""
        with self._pool_lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None

    def _get_pool(self) -> WorkerPool:
        with self._pool_lock:
            if self._pool is None:
                self._pool = WorkerPool(
                    _compare_in_worker,
                    num_workers=self.num_workers,
                    timeout_seconds=self.timeout_seconds,
                    batch_timeout_seconds=self.batch_timeout_seconds,
                    initializer=_guard_worker,
                    warm_up=_warm_up_zygote,
                    preload=(_WORKER_MODULE,),
                    memory_limit_mb=self.memory_limit_mb,
                )
            return self._pool

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_pool"] = None
        del state["_pool_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._pool_lock = threading.Lock()
        _REWARDS.add(self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(timeout_seconds={self.timeout_seconds}, num_workers={self.num_workers})"


_VERDICT_NAMES = frozenset(failure.value for failure in _VERDICTS)
# Every reward in this process, so that a forked child gets fresh locks (another thread may have held one at the fork).
_REWARDS: weakref.WeakSet[CorrectnessReward] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for reward in list(_REWARDS):
        reward._pool_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def answers_match(gold: str, pred: str) -> bool:
    """Whether the completion text `pred` states an answer equal to `gold`.

    Uses the default `correctness_reward`; `pred` may also be a bare answer (`"\\\\frac{1}{2}"`).

    Args:
        gold (`str`): The gold answer.
        pred (`str`): A completion text or a bare answer.
    """
    return correctness_reward.score([gold], [pred])[0] == 1.0


correctness_reward = CorrectnessReward()
