"""Compressors: make a teacher's reasoning fit a token budget.

- `truncate`: the first N thinking tokens, thought closed there (the baseline to beat).
- `prune`: split into steps, score each, drop the least important until the trace fits, never dropping a step the
  conclusion rests on.
- `rewrite`: a teacher backend writes the reasoning again under the budget; retried when over budget or when the
  answer was lost.

Each takes `(row, reasoning, max_tokens, min_tokens)` and returns reasoning text or None; the compress stage checks
every result (length and answer) before keeping it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from cotx_rl.budget import count_reasoning_tokens
from cotx_rl.steps import leads_to_answer, split_paragraphs, step_facts, supporting_steps

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


class PruneCompressor(Compressor):
    """Drop the least important steps until the trace fits; add back the best dropped ones to reach `min_tokens`.

    The units dropped or kept are sentences inside paragraphs that hold a step the conclusion rests on, and whole
    paragraphs elsewhere: a digression (a re-verification pass, a reflection) is kept whole or not at all, so that a
    kept digression never stops half-way and leaves a stray intermediate value right before the conclusion.
    """

    name = "prune"

    def compress(self, row: dict, reasoning: str, max_tokens: int, min_tokens: int = 0) -> str | None:
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
    """A teacher rewrites the reasoning under the budget; retried with a tighter ask when over budget or wrong."""

    name = "rewrite"

    def __init__(self, tokenizer: Any, teacher, max_attempts: int = 3, shrink: float = 0.8):
        super().__init__(tokenizer)
        self.teacher, self.max_attempts, self.shrink = teacher, max_attempts, shrink

    def compress(self, row: dict, reasoning: str, max_tokens: int, min_tokens: int = 0) -> str | None:
        ask = max_tokens
        for _ in range(self.max_attempts):
            text = self.teacher.rewrite(row, reasoning, ask, count_tokens=self.count).strip()
            tokens = self.count(text)
            if tokens <= max_tokens and leads_to_answer(text, row["answer"], row["question"]):
                return text
            ask = max(1, int(ask * self.shrink)) if tokens > max_tokens else ask
        return None


COMPRESSORS: dict[str, Callable[..., Compressor]] = {
    "truncate": TruncateCompressor,
    "prune": PruneCompressor,
    "rewrite": RewriteCompressor,
}
