"""`correctness_reward` measured against real data: peer verifiers' test cases, GSM8K and MATH-500.

How the verifier cases are fed: `gold` is passed as the gold answer and `pred` as the completion text, both exactly
as stored, with no wrapping in `$...$` or `\\boxed{}`. Our extraction then runs on both sides (a gold may be a bare
answer or a full solution with a box), which mirrors how Math-Verify's tests call it: `compare_strings(gold, pred)`
and `verify(parse(gold), parse(pred))` run the same `parse` on both strings. A case agrees when our score is 1.0
exactly when `expected` is true (None, for an unreadable gold, counts as "not equal").
"""

import json

import pytest

from rewards import CorrectnessReward

# Math-Verify's comparison defaults. A case is kept when its config leaves each of these at the default (absent or
# equal to it); `match_types` and `helper` are not filtered, since they only choose which of Math-Verify's extractors
# ran, and ours is fixed. This keeps 333 of the 342 cases: it drops precision 2, 4 and 5 (6 cases), `strict: false`
# (1) and `allow_set_relation_comp: true` (2).
MATH_VERIFY_DEFAULTS = {"precision": 6, "strict": True, "allow_set_relation_comp": False}

# Distinct MATH-500 gold strings that are the same answer, under rules documented in `rewards.correctness`:
# degrees equal the bare number (as in Math-Verify, which never converts degrees), a subscript base is read as the
# digits (`40_9` is "40 in base 9"), a currency sign, a unit or `x =` is dropped, `(a, b)` compares in order with the
# bare list `a, b`, a bare list is a set, and spacing or `\frac14` spellings do not matter.
SAME_ANSWER_PAIRS = {
    ("90^\\circ", "90"),
    ("120^\\circ", "120"),
    ("30^\\circ", "30"),
    ("36", "36^\\circ"),
    ("36", "\\$36"),
    ("36^\\circ", "\\$36"),
    ("5", "x=5"),
    ("15", "15\\mbox{ cm}^2"),
    ("40_9", "40"),
    ("1,-2", "-2,1"),
    ("(-2,1)", "-2,1"),
    ("\\frac{1}{4}", "\\frac14"),
    ("10,\\!080", "10080"),
    ("2 \\sqrt{5}", "2\\sqrt{5}"),
}


@pytest.fixture(scope="module")
def reward():
    instance = CorrectnessReward()
    yield instance
    instance.close()


def load_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def agreement(reward, cases: list[dict]) -> tuple[float, str]:
    scores = reward.score([case["gold"] for case in cases], [case["pred"] for case in cases])
    disagreements = [
        f"  expected={case['expected']!s:5} got={score} gold={case['gold'][-80:]!r} pred={case['pred'][-120:]!r}"
        for case, score in zip(cases, scores)
        if (score == 1.0) != case["expected"]
    ]
    rate = 1 - len(disagreements) / len(cases)
    return rate, f"agreement {rate:.1%} on {len(cases)} cases; disagreeing cases:\n" + "\n".join(disagreements)


def test_agrees_with_math_verify_cases(reward, shared_data):
    cases = load_jsonl(shared_data / "verifier_cases_mathverify.jsonl")
    default_cases = [
        case
        for case in cases
        if all(case["config"].get(key, default) == default for key, default in MATH_VERIFY_DEFAULTS.items())
    ]
    assert len(default_cases) == 333
    rate, report = agreement(reward, default_cases)
    assert rate >= 0.95, report


def test_agrees_with_other_graders_cases(reward, shared_data):
    cases = load_jsonl(shared_data / "verifier_cases_other_graders.jsonl")
    rate, report = agreement(reward, cases)
    assert rate >= 0.90, report


def test_gsm8k_golds_equal_their_variants(reward, shared_data):
    golds = [row["answer"].rsplit("####", 1)[1].strip() for row in load_jsonl(shared_data / "gsm8k_test.jsonl")]
    assert len(golds) == 1319
    completions, expanded = [], []
    for gold in golds:
        value = int(gold.replace(",", ""))
        for completion in (f"\\boxed{{{gold}}}", f"{value}.0", f"The answer is {value:,}.", f"#### {value:,}"):
            completions.append(completion)
            expanded.append(gold)
    scores = reward.score(expanded, completions)
    failures = [(g, c, s) for g, c, s in zip(expanded, completions, scores) if s != 1.0]
    assert not failures, failures[:20]


def test_math500_golds_equal_themselves_reboxed(reward, shared_data):
    golds = [row["answer"] for row in load_jsonl(shared_data / "math500_test.jsonl")]
    assert len(golds) == 500
    scores = reward.score(golds, [f"\\boxed{{{gold}}}" for gold in golds])
    failures = [(gold, score) for gold, score in zip(golds, scores) if score != 1.0]
    assert not failures, failures


def test_math500_distinct_golds_differ(reward, shared_data):
    """Each distinct gold against every later one re-boxed as a completion, in one batch (45,150 pairs)."""
    golds = list(dict.fromkeys(row["answer"] for row in load_jsonl(shared_data / "math500_test.jsonl")))
    pairs = [(gold, other) for i, gold in enumerate(golds) for other in golds[i + 1 :]]
    scores = reward.score([gold for gold, _ in pairs], [f"\\boxed{{{other}}}" for _, other in pairs])
    assert None not in scores
    equal = {pair for pair, score in zip(pairs, scores) if score == 1.0}
    assert equal == SAME_ANSWER_PAIRS, {
        "unexpectedly equal": sorted(equal - SAME_ANSWER_PAIRS),
        "unexpectedly different": sorted(SAME_ANSWER_PAIRS - equal),
    }
