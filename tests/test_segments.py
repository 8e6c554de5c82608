"""Real reasoning as segments: splitting, reading the answer, scores, and pruning a general (non-embedded) trace."""

from __future__ import annotations

import pytest

from cotx_rl.compressors import PruneCompressor
from cotx_rl.io import read_rows
from cotx_rl.segments import analyse, join_segments, reaches_answer, segment_scores, split_segments

TRACE = (
    "Okay, so I need the probability of landing on C. The probabilities of A and B are 1/3 and 5/12.\n\n"
    "The three must add up to 1, so:\n\n"
    "\\[\nP(C) = 1 - \\frac{1}{3} - \\frac{5}{12}. \\text{ Then } x.\n\\]\n\n"
    "With a common denominator, 1/3 = 4/12, so 4/12 + 5/12 = 9/12. Then 1 - 9/12 = 3/12 = 1/4.\n\n"
    "Wait, let me double-check that. 4/12 + 5/12 is 9/12, and 12/12 - 9/12 = 3/12. Yes, 3/12 = 1/4.\n\n"
    "Alternatively, in decimals: 1/3 is about 0.333 and 5/12 is about 0.417, which add to 0.75, leaving 0.25.\n\n"
    "So the probability of landing on C is 1/4.\n\n"
    "I'm confident in this."
)
QUESTION = "The probability of A is 1/3 and of B is 5/12. What is the probability of C?"
ROW = {"id": "spinner", "question": QUESTION, "answer": "\\frac{1}{4}", "reasoning": TRACE}


def test_segments_are_spans_that_join_back_into_the_text():
    segments = split_segments(TRACE)
    assert join_segments(TRACE, segments, range(len(segments))) == TRACE
    texts = [TRACE[s.start : s.end] for s in segments]
    display = next(t for t in texts if "\\[" in t)
    assert display.startswith("The three must add up to 1") and display.endswith("\\]")  # kept with its lead-in
    kinds = {t.split()[0]: s.kind for t, s in zip(texts, segments)}
    assert kinds["Wait,"] == "reflection" and kinds["Alternatively,"] == "alternative" and kinds["Okay,"] == "step"


@pytest.mark.parametrize(
    ("text", "starts"),
    [
        ("So x = 2. Wait, that is wrong. Hmm. Let me recompute: x = 3.", ["So x", "Wait,", "Hmm."]),
        ("First 2 + 2 = 4.\nThen 4 + 1 = 5.", ["First"]),
        ("We get $a. B$ here. Then $c$.", ["We get"]),
    ],
)
def test_turns_start_segments_and_math_is_never_cut(text, starts):
    assert [text[s.start : s.end].split(" ")[0] for s in split_segments(text)] == [s.split(" ")[0] for s in starts]


def test_analysis_finds_the_conclusion_the_first_reach_and_what_the_conclusion_rests_on():
    analysis = analyse(TRACE, ROW["answer"], QUESTION)
    texts = analysis.texts()
    assert texts[analysis.conclusion] == "So the probability of landing on C is 1/4."
    assert texts[analysis.first_reach].startswith("With a common denominator")
    assert analysis.first_reach < analysis.conclusion
    scores = segment_scores(analysis)
    assert scores[analysis.conclusion] == float("inf")
    reflection = next(i for i, t in enumerate(texts) if t.startswith("Wait"))
    alternative = next(i for i, t in enumerate(texts) if t.startswith("Alternatively"))
    assert max(scores[reflection], scores[alternative]) < scores[analysis.first_reach]


def test_prune_drops_reflection_and_re_verification_first_and_ends_at_the_conclusion(bpe_tokenizer):
    prune = PruneCompressor(bpe_tokenizer)
    full = prune.count(TRACE)
    assert prune.compress(ROW, TRACE, full, 0) == TRACE  # a trace that fits is kept as it is
    short = prune.compress(ROW, TRACE, int(0.75 * full), 0)
    assert short is not None and prune.count(short) <= int(0.75 * full)
    assert short.endswith("So the probability of landing on C is 1/4.")
    assert "Wait" not in short and "Alternatively" not in short and "I'm confident" not in short
    assert "9/12" in short
    assert prune.compress(ROW, TRACE, 5, 0) is None and prune.failure_reason == "derivation_too_long"
    assert prune.compress({**ROW, "answer": "7"}, TRACE, full, 0) is None and prune.failure_reason == "no_conclusion"


def test_reaching_the_answer():
    assert reaches_answer(TRACE, "\\frac{1}{4}") and reaches_answer(TRACE, "0.25")
    assert not reaches_answer(TRACE, "\\frac{1}{3}")
    moved_on = TRACE + "\n\nActually, the answer is \\boxed{1/3}."
    assert not reaches_answer(moved_on, "\\frac{1}{4}")


def test_a_real_trace_splits_in_order_without_overlap(shared_data):
    rows = read_rows(shared_data / "real" / "traces" / "Qwen3-4B-Thinking-2507__math_train100.jsonl")
    text = max((r["thinking"] for r in rows), key=len)
    segments = split_segments(text)
    assert len(segments) > 100
    assert all(a.end <= b.start for a, b in zip(segments, segments[1:]))
    assert join_segments(text, segments, range(len(segments))) == text[segments[0].start : segments[-1].end]
