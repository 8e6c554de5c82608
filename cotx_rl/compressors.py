"""Compressors: make a teacher's reasoning fit a token budget.

- `truncate`: the first N thinking tokens, thought closed there (the baseline to beat).
- `prune`: split into units, score each, drop the least important until the trace fits, never dropping a unit the
  conclusion rests on. Embedded-domain traces are pruned as arithmetic steps under the strict chain check; any other
  trace as segments of real reasoning ([`cotx_rl.segments`]), in time linear in its length.
- `rewrite`: a teacher backend writes the reasoning again under the budget, a batch of requests per backend call;
  retried with a tighter ask when over budget or when the answer was lost.

Each takes `(row, reasoning, max_tokens, min_tokens)` and returns reasoning text or None (and says why in
`failure_reason`); the compress stage checks every result (length and answer) before keeping it.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cotx_rl.budget import count_reasoning_tokens
from cotx_rl.segments import Segment, analyse, join_segments, segment_scores
from cotx_rl.steps import embedded_problem, leads_to_answer, split_paragraphs, step_facts, supporting_steps
from cotx_rl.teachers.base import RewriteRequest

REFLECTION = re.compile(
    r"\b(wait|hmm|let me (?:re-?check|check|verify|double-check|redo|recap|go (?:over|through))|double-check\w*|"
    r"re-?check\w*|to be sure|actually|is that right|so far|once more|again|recap)\b",
    re.IGNORECASE,
)
INTERRUPTION_PENALTY = 0.5
_WORD = re.compile(r"[A-Za-z]+|\d+(?:\.\d+)?|[-+*/=]")


def _token_set(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


def _overlap(a: set[str], b: set[str]) -> float:
    return len(a & b) / max(1, len(a))


def step_importance(steps: list[str], question: str, support: set[int]) -> list[float]:
    """A score per step; higher is more important, `inf` for the steps the conclusion rests on.

    Penalised: repetition of earlier content, reflection and re-checking, restating the question, false equations
    (wrong turns). Rewarded: deriving a value that a later step uses.
    """
    question_words = _token_set(question)
    facts = [step_facts(s) for s in steps]
    later_uses: list[set] = [set() for _ in steps]
    for i in range(len(steps) - 2, -1, -1):
        later_uses[i] = later_uses[i + 1] | set(facts[i + 1].uses)
    seen: set[str] = set()
    scores = []
    for i, step in enumerate(steps):
        if i in support:
            scores.append(float("inf"))
            continue
        words = _token_set(step)
        score = 1.0
        score -= 0.6 * _overlap(words, seen)
        score -= 0.4 * bool(REFLECTION.search(step))
        score -= 0.3 * (_overlap(words, question_words) > 0.6)
        score -= 1.0 * (facts[i].false_equations > 0)
        score += 0.2 * any(v in later_uses[i] for v in facts[i].derives)
        scores.append(score)
        seen |= words
    return scores


def _cheapest_removal(
    items: list[int], lengths: list[int], scores: list[float], low: int, high: int
) -> set[int] | None:
    """The set of `items` of least total importance whose lengths add up to a value in `[low, high]` (subset sum)."""
    floor = min((scores[i] for i in items), default=0.0)
    best: dict[int, tuple[float, tuple[int, ...]]] = {0: (0.0, ())}
    for i in items:
        for removed, (cost, chosen) in list(best.items()):
            size = removed + lengths[i]
            if size > high:
                continue
            candidate = (cost + scores[i] - floor + 0.01, (*chosen, i))
            if size not in best or candidate[0] < best[size][0]:
                best[size] = candidate
    fits = [value for size, value in best.items() if low <= size <= high]
    return set(min(fits)[1]) if fits else None


class Compressor:
    name = "compressor"
    # Why the last `compress` call returned None, for the stage's drop counts (single-threaded use).
    failure_reason: str = "no_fit"

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer

    def count(self, reasoning: str) -> int:
        return count_reasoning_tokens(reasoning, self.tokenizer)

    def compress(self, row: dict, reasoning: str, max_tokens: int, min_tokens: int = 0) -> str | None:
        raise NotImplementedError


class TruncateCompressor(Compressor):
    """The first `max_tokens` thinking tokens of the trace, cut mid-sentence if need be."""

    name = "truncate"

    def compress(self, row: dict, reasoning: str, max_tokens: int, min_tokens: int = 0) -> str | None:
        if self.count(reasoning) <= max_tokens:
            return reasoning
        ids = self.tokenizer(reasoning, add_special_tokens=False)["input_ids"]
        keep = max_tokens
        while keep > 0:
            text = self.tokenizer.decode(ids[:keep]).rstrip()
            if self.count(text) <= max_tokens:
                return text
            keep -= 1
        return None


# Segments scoring at least this much are the derivation: `prune` drops only the others (reflection, re-checks,
# alternatives, recaps, abandoned attempts, re-verification after the answer, repetition, restatements).
DEFAULT_KEEP_SCORE = 0.7
# Exact recounts of a pruned text before a window counts as missed: the per-segment estimate is off by a few tokens
# where segments meet, and each recount corrects the targets by the error it measured.
MAX_RECOUNTS = 4


@dataclass
class _PrunePlan:
    """What `prune` reads once per general trace and reuses for every window: segments up to the conclusion, their
    estimated tokens, and the order in which they are dropped (least important first)."""

    text: str
    segments: list[Segment]
    costs: list[int]
    breaks: list[int]  # 1 where a segment starts a new paragraph (one more token for the blank line)
    order: list[int]
    total_tokens: int

    def estimate(self, keep: Sequence[bool]) -> int:
        return 2 + sum(c + b for c, b, k in zip(self.costs, self.breaks, keep) if k)


class PruneCompressor(Compressor):
    """Drop the least important units until the trace fits; add back the best dropped ones to reach `min_tokens`.

    *General traces* (anything but the embedded domain) are read as segments of real reasoning
    ([`cotx_rl.segments.analyse`]): the conclusion (the last segment that states the gold answer, by the verifier) is
    always kept and ends the pruned text; segments scoring at least `keep_score` are the derivation and are kept too;
    the rest go in order of [`cotx_rl.segments.segment_scores`], least important first. Each segment's tokens are
    counted once per trace and the drop order is sorted once, so a window costs one pass over the segments plus a few
    exact recounts of the result (at most [`MAX_RECOUNTS`]): O(length) per trace and window. A trace that already fits
    the window is returned as it is. `failure_reason` is `no_conclusion` when the trace never states the gold answer,
    `derivation_too_long` when the kept derivation alone is over the window, `window_missed` otherwise.

    *Embedded-domain traces* keep their arithmetic chain: the units dropped or kept are sentences inside paragraphs
    that hold a step the conclusion rests on, and whole paragraphs elsewhere: a digression (a re-verification pass, a
    reflection) is kept whole or not at all, so that a kept digression never stops half-way and leaves a stray
    intermediate value right before the conclusion.

    Args:
        tokenizer: the student's tokenizer, which counts thinking tokens.
        keep_score (`float`): segments of a general trace scoring at least this are never dropped.
    """

    name = "prune"

    def __init__(self, tokenizer: Any, keep_score: float = DEFAULT_KEEP_SCORE):
        super().__init__(tokenizer)
        self.keep_score = keep_score
        # The stage asks for several windows of one trace in a row: its plan is read once.
        self._plans: OrderedDict[tuple, _PrunePlan | None] = OrderedDict()

    def compress(self, row: dict, reasoning: str, max_tokens: int, min_tokens: int = 0) -> str | None:
        self.failure_reason = "no_fit"
        if embedded_problem(row["question"], row["answer"]) is not None:
            return self._compress_chain(row, reasoning, max_tokens, min_tokens)
        plan = self.plan(row, reasoning)
        if plan is None:
            self.failure_reason = "no_conclusion"
            return None
        if min_tokens <= plan.total_tokens <= max_tokens:
            return reasoning
        delta = 0
        for _ in range(MAX_RECOUNTS):
            keep = self._select(plan, max_tokens - delta, min_tokens - delta)
            if keep is None:
                return None
            text = join_segments(plan.text, plan.segments, [i for i, k in enumerate(keep) if k])
            tokens = self.count(text)
            if min_tokens <= tokens <= max_tokens:
                return text
            delta = tokens - plan.estimate(keep)
        self.failure_reason = "window_missed"
        return None

    def plan(self, row: dict, reasoning: str) -> _PrunePlan | None:
        """The trace's segments, token costs and drop order (None when it never states the gold answer); cached."""
        key = (row.get("id"), row["question"], row["answer"], reasoning)
        if key in self._plans:
            self._plans.move_to_end(key)
            return self._plans[key]
        analysis = analyse(reasoning, row["answer"], row["question"])
        plan = None
        if analysis.conclusion is not None:
            segments = analysis.segments[: analysis.conclusion + 1]
            texts = [" " + reasoning[s.start : s.end] for s in segments]
            costs = [len(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]
            breaks = [int(i > 0 and s.paragraph != segments[i - 1].paragraph) for i, s in enumerate(segments)]
            scores = segment_scores(analysis)
            droppable = [i for i, score in enumerate(scores) if score < self.keep_score]
            order = sorted(droppable, key=lambda i: (scores[i], -i))
            plan = _PrunePlan(reasoning, segments, costs, breaks, order, self.count(reasoning))
        self._plans[key] = plan
        while len(self._plans) > 4:
            self._plans.popitem(last=False)
        return plan

    def _select(self, plan: _PrunePlan, high: int, low: int) -> list[bool] | None:
        """Which segments to keep for an estimated length in `[low, high]`, or None (with `failure_reason` set)."""
        keep = [True] * len(plan.segments)
        estimate = plan.estimate(keep)
        dropped = []
        for i in plan.order:
            if estimate <= high:
                break
            keep[i] = False
            estimate -= plan.costs[i] + plan.breaks[i]
            dropped.append(i)
        if estimate > high:
            self.failure_reason = "derivation_too_long"
            return None
        for i in reversed(dropped):  # the most important dropped segments first
            if estimate >= low:
                break
            cost = plan.costs[i] + plan.breaks[i]
            if estimate + cost <= high:
                keep[i] = True
                estimate += cost
        if estimate < low:
            self.failure_reason = "window_missed"
            return None
        return keep

    def _compress_chain(self, row: dict, reasoning: str, max_tokens: int, min_tokens: int) -> str | None:
        """The embedded domain's pruning (see the class docstring)."""
        paragraphs = split_paragraphs(reasoning)
        steps = [step for paragraph in paragraphs for step in paragraph]
        support = supporting_steps(steps, row["answer"], row["question"])
        if support is None:  # the trace never reaches the answer: nothing to keep it to
            return None
        step_scores = step_importance(steps, row["question"], support)
        units, digressions, support_paragraphs, first = [], set(), 0, 0
        for paragraph in paragraphs:
            indices = list(range(first, first + len(paragraph)))
            first += len(paragraph)
            if support & set(indices):
                support_paragraphs += 1
                units.extend([i] for i in indices)
            else:
                digressions.add(len(units))
                units.append(indices)
        # An aside inside the derivation (a check between two steps) costs the student more than a digression of its
        # own: it has to find its place in the chain again. Asides go first.
        scores = [
            _mean(step_scores, unit) - INTERRUPTION_PENALTY * (u not in digressions) for u, unit in enumerate(units)
        ]
        # Estimated thinking tokens: the two newlines around the thought, two more per paragraph break, and each
        # unit's own tokens (a digression brings its paragraph break); the exact count of the joined text decides.
        lengths = [
            self.count(" ".join(steps[i] for i in unit)) - 2 + 2 * (u in digressions) for u, unit in enumerate(units)
        ]
        base = 2 * support_paragraphs

        def estimate(kept) -> int:
            return base + sum(lengths[u] for u in kept)

        everything = set(range(len(units)))
        kept = set(everything)
        droppable = [u for u in sorted(everything, key=lambda u: (scores[u], -u)) if scores[u] != float("inf")]
        dropped: list[int] = []
        for u in droppable:
            if estimate(kept) <= max_tokens:
                break
            kept.discard(u)
            dropped.append(u)
        for u in reversed(dropped):  # most important dropped units first
            if estimate(kept) >= min_tokens:
                break
            if estimate(kept | {u}) <= max_tokens:
                kept.add(u)
        if estimate(kept) < min_tokens:  # greedy overshot the window: search for a better set to drop
            total = estimate(everything)
            chosen = _cheapest_removal(droppable, lengths, scores, total - max_tokens, total - min_tokens)
            if chosen is not None:
                kept = everything - chosen
        text = self._join(paragraphs, units, kept)
        while self.count(text) > max_tokens:
            removable = [u for u in droppable if u in kept]
            if not removable:
                return None
            kept.discard(removable[0])
            text = self._join(paragraphs, units, kept)
        return text

    @staticmethod
    def _join(paragraphs: list[list[str]], units: list[list[int]], kept: set[int]) -> str:
        keep = {i for u in kept for i in units[u]}
        out, first = [], 0
        for paragraph in paragraphs:
            sentences = [s for offset, s in enumerate(paragraph) if first + offset in keep]
            first += len(paragraph)
            if sentences:
                out.append(" ".join(sentences))
        return "\n\n".join(out)


def _mean(scores: list[float], indices: list[int]) -> float:
    return sum(scores[i] for i in indices) / len(indices)


class RewriteCompressor(Compressor):
    """A teacher rewrites the reasoning under the budget; retried with a tighter ask when over budget or wrong.

    [`RewriteCompressor.compress_batch`] sends a batch of requests per attempt through the teacher's batch interface
    ([`cotx_rl.teachers.Teacher.rewrite_batch`]): concurrent requests for the openai backend, one `generate` call for
    transformers and vLLM.
    """

    name = "rewrite"

    def __init__(self, tokenizer: Any, teacher, max_attempts: int = 3, shrink: float = 0.8):
        super().__init__(tokenizer)
        self.teacher, self.max_attempts, self.shrink = teacher, max_attempts, shrink

    def compress(self, row: dict, reasoning: str, max_tokens: int, min_tokens: int = 0) -> str | None:
        return self.compress_batch([(row, reasoning, max_tokens, min_tokens)])[0]

    def compress_batch(self, items: Sequence[tuple[dict, str, int, int]]) -> list[str | None]:
        """Rewrites of `(row, reasoning, max_tokens, min_tokens)` items (see [`RewriteCompressor.rewrites`])."""
        return self.rewrites(items)[0]

    def rewrites(self, items: Sequence[tuple[dict, str, int, int]]) -> tuple[list[str | None], list[bool]]:
        """Rewrites of `(row, reasoning, max_tokens, min_tokens)` items, one teacher call per attempt for all those
        still without a rewrite that fits and keeps the answer; and, per item, whether its last request failed (no
        answer, rather than a bad one)."""
        results: list[str | None] = [None] * len(items)
        request_failed = [False] * len(items)
        asks = [max_tokens for _, _, max_tokens, _ in items]
        todo = list(range(len(items)))
        for _ in range(self.max_attempts):
            if not todo:
                break
            requests = [RewriteRequest(items[i][0], items[i][1], asks[i]) for i in todo]
            texts = self.teacher.rewrite_batch(requests, count_tokens=self.count)
            retry = []
            for i, text in zip(todo, texts):
                row, _, max_tokens, _ = items[i]
                request_failed[i] = text is None
                if text is None:  # the request failed (logged by the backend): ask again, as it was
                    retry.append(i)
                    continue
                text = text.strip()
                tokens = self.count(text)
                if tokens <= max_tokens and leads_to_answer(text, row["answer"], row["question"]):
                    results[i] = text
                    continue
                asks[i] = max(1, int(asks[i] * self.shrink)) if tokens > max_tokens else asks[i]
                retry.append(i)
            todo = retry
        return results, request_failed


COMPRESSORS: dict[str, Callable[..., Compressor]] = {
    "truncate": TruncateCompressor,
    "prune": PruneCompressor,
    "rewrite": RewriteCompressor,
}
