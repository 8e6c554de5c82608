"""Unit tests of `rewards.correctness`: answer extraction, equality rules, and the reward's API."""

import json
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import rewards
from rewards import CorrectnessReward, correctness_reward
from rewards.correctness import answers_match, extract_final_answer

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def reward():
    instance = CorrectnessReward(timeout_seconds=5.0)
    yield instance
    instance.close()


# ------------------------------------------------------------------------------------------------------- extraction

MATRIX = "\\begin{pmatrix}1 & 0 \\\\ 0 & 1\\end{pmatrix}"


@pytest.mark.parametrize(
    "text,expected",
    [
        ("So the result is \\boxed{\\frac{1}{\\sqrt{2}}}.", "\\frac{1}{\\sqrt{2}}"),
        ("\\boxed{\\{1, \\{2\\}\\}}", "\\{1, \\{2\\}\\}"),
        ("First \\boxed{1}. After checking everything again, the result is \\boxed{2}", "2"),
        ("The roots are \\boxed{-2} and \\boxed{1}.", "-2,1"),
        ("\\fbox{7}", "7"),
        ("Natalia sold 48/2 = 24 clips in May.\n#### 72", "72"),
        ("#### 1,234", "1,234"),
        ("The final answer is $\\frac{1}{2}$. I hope it is correct.", "\\frac{1}{2}"),
        ("Thus the final answer is 12,000,023. I hope it is correct.", "12,000,023"),
        ("**Final Answer:** 42", "42"),
        ("Answer: $x = 5$.", "x = 5"),
        ("Final Answer: The volume of $ABCD$ is 120. I hope it is correct.", "120"),
        ("The answer is 42 because geometry proves it", "42"),
        ("Step one gives \\boxed{3}. The final answer is $5$.", "5"),
        ("$\\frac{1}{3} \\text{ meters}$", "\\frac{1}{3} \\text{ meters}"),
        ("The identity matrix is $\\begin{pmatrix}1 & 0 \\\\ 0 & 1\\end{pmatrix}$.", MATRIX),
        ("so the total is 1,000.99€", "1,000.99"),
        ("$1, 2, 3, ...$", "1, 2, 3, ..."),
        ("<think>maybe \\boxed{3}</think>The answer is \\boxed{4}", "4"),
        ("<think>it is \\boxed{3}</think> I am confident.", "3"),
        ("", None),
        ("__import__('os').system('ls') or 0", None),
    ],
)
def test_extract_final_answer(text, expected):
    assert extract_final_answer(text) == expected


# Long runs of "$", of "answer", of openers: inputs on which naive regular expressions backtrack for ever.
PATHOLOGICAL = {
    "dollars": "$" * 200_000,
    "answer words": "answer " * 50_000,
    "answer sentences": "The answer is clear. " * 20_000,
    "display openers": "\\[" * 100_000,
    "commas": "1," * 100_000,
    "braces": "{" * 200_000,
    "nested boxes": "\\boxed{" * 50_000 + "}" * 50_000,
}


@pytest.mark.parametrize("name", list(PATHOLOGICAL))
def test_extract_final_answer_finds_the_answer_after_pathological_text(name):
    # The answer after the noise is still found (and promptly: these inputs make naive patterns run for hours).
    assert extract_final_answer(PATHOLOGICAL[name] + " So the final answer is \\boxed{42}.") == "42"


@pytest.mark.parametrize("name", ["dollars", "answer words", "display openers", "braces"])
def test_extract_final_answer_finds_no_answer_in_pathological_text(name):
    assert extract_final_answer(PATHOLOGICAL[name]) is None


# --------------------------------------------------------------------------------------------------------- equality


EQUAL = [
    # integers and decimals
    ("7425000", "\\boxed{7,425,000}"),
    ("1000", "1 000"),
    ("1000", "\\boxed{1000.0}"),
    ("0.5", "\\boxed{.5}"),
    ("-3", "\\boxed{-3}"),
    ("14916", "\\boxed{14{,}916}"),
    ("1234", "\\boxed{1\\,234}"),
    # fractions
    ("\\frac{1}{2}", "\\boxed{\\dfrac{1}{2}}"),
    ("1/2", "\\boxed{\\tfrac12}"),
    ("\\frac{3}{4}", "\\boxed{0.75}"),
    ("\\frac{1}{3}", "\\boxed{0.333333}"),
    # numbers compare with a relative tolerance of 1e-6
    ("16386.17", "\\boxed{16386.16}"),
    ("100000000000", "\\boxed{99999999999}"),
    ("1", "\\boxed{1.000001}"),
    ("\\pi", "\\boxed{\\frac{355}{113}}"),  # 8.5e-8 apart: equal under the 1e-6 rule
    ("40/9", "The answer is 4 4/9."),
    # percentages
    ("50\\%", "\\boxed{0.5}"),
    ("0.335", "\\boxed{33.5\\%}"),
    ("28\\%", "\\boxed{28}"),
    ("0.005", "\\boxed{\\frac{1}{2}\\text{ percent}}"),
    # radicals, powers, pi and e
    ("2\\sqrt{2}", "\\boxed{\\sqrt{8}}"),
    ("2^{10}", "\\boxed{1024}"),
    ("\\sqrt{2}", "\\boxed{1.4142135623730951}"),
    ("2\\pi", "\\boxed{\\pi + \\pi}"),
    ("e^2", "\\boxed{e \\cdot e}"),
    ("96-10\\sqrt{21}", "\\boxed{\\frac{6\\sqrt{1789-240\\sqrt{21}}+8\\sqrt{1236-240\\sqrt{21}}}{5}}"),
    # units and text
    ("5", "\\boxed{5 \\text{ cm}}"),
    ("12", "\\boxed{12\\text{ dollars}}"),
    ("15000", "\\boxed{\\$15,\\!000}"),
    # thousands written `,\!` inside a structure (a MATH-train gold: R1-Distill-32B trace 26 of the shared set)
    ("\\dfrac{1}{29,\\!322,\\!216}", "\\boxed{\\dfrac{1}{29322216}}"),
    ("\\frac{3}{1,\\!000}", "\\boxed{0.003}"),
    ("90", "\\boxed{90^\\circ}"),
    ("74^\\circ", "\\boxed{74°}"),
    ("125", "The distance is 125 miles."),
    # assignments
    ("5", "\\boxed{x = 5}"),
    ("x = 5", "\\boxed{5}"),
    ("2 = x", "\\boxed{2}"),
    ("74^\\circ", "\\boxed{\\angle APC = 74^\\circ}"),
    # symbolic expressions, equations, inequalities
    ("x^2+2x+1", "\\boxed{(x+1)^2}"),
    ("\\tan^2(y)+1", "\\boxed{\\sec^2(y)}"),
    ("\\frac{x+2}{7}", "\\boxed{\\frac{x}{7}+\\frac{2}{7}}"),
    ("\\sqrt{3} - 1", "-1 + sqrt(3)"),
    ("2**(1/4)", "\\boxed{\\sqrt{\\sqrt{2}}}"),
    ("2x+4y-3=0", "\\boxed{y=-\\frac{1}{2}x+\\frac{3}{4}}"),
    ("x \\le 2", "\\boxed{2 \\ge x}"),
    ("x < 1", "\\boxed{-x > -1}"),
    # intervals, sets, tuples, matrices
    ("[1, 2)", "\\boxed{[1,2)}"),
    ("(0, \\frac{1}{2})", "\\boxed{(0, 0.5)}"),
    ("(-\\infty,-8)\\cup (8,\\infty)", "\\boxed{(8, \\infty) \\cup (-\\infty, -8)}"),
    ("-2 \\le x \\le 7", "\\boxed{[-2, 7]}"),
    ("\\{1,2,3\\}", "\\boxed{\\{3,2,1\\}}"),
    ("1,-2", "\\boxed{-2, 1}"),
    ("\\pm 2021", "\\boxed{\\{-2021, 2021\\}}"),
    ("(1, 2, 3)", "\\boxed{(1, 2, \\frac{6}{2})}"),
    ("\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", "\\boxed{\\begin{bmatrix}1&2\\\\3&\\frac{8}{2}\\end{bmatrix}}"),
    # plain text, case-insensitive
    ("\\text{Evelyn}", "\\boxed{evelyn}"),
    ("\\text{(C)}", "The answer is (C)."),
    ("\\text{odd}", "\\boxed{\\text{Odd}}"),
]

DIFFERENT = [
    ("5", "\\boxed{500}"),
    ("\\frac{3}{1,\\!000}", "\\boxed{\\frac{3}{1001}}"),
    ("(1,234)", "\\boxed{(1234)}"),  # a comma without a thin space may separate items
    ("5", "\\boxed{0.05}"),
    ("0.28", "\\boxed{28}"),
    ("12.5\\%", "\\boxed{12.5}"),
    ("16386.17", "\\boxed{16386.0}"),
    ("1", "\\boxed{1.00001}"),
    ("\\frac{1}{3}", "\\boxed{0.33}"),
    ("\\pi", "\\boxed{3.14}"),
    ("\\sqrt{2}", "\\boxed{1.41}"),
    ("4", "The answer is 4 4/9."),
    ("4", "\\boxed{4 4/0}"),
    ("x=5", "\\boxed{y=5}"),
    ("2x + z = 1", "\\boxed{1}"),
    ("0", "\\boxed{5x - 7y + 11z + 4 = 0}"),
    ("x^2+2x+1", "\\boxed{(x-1)^2}"),
    ("x + 2n + 1", "\\boxed{x + 1}"),
    ("f(x)", "\\boxed{f(y)}"),
    ("y = 2x", "\\boxed{y = 3x}"),
    ("x < 2", "\\boxed{x \\le 2}"),
    ("x > 5", "\\boxed{x < 5}"),
    ("(1,2]", "\\boxed{[1,2]}"),
    ("(0,9)", "\\boxed{[0,9)}"),
    ("\\{1,2\\}", "\\boxed{\\{1,3\\}}"),
    ("(1,2,3)", "\\boxed{(3,2,1)}"),
    ("12", "\\boxed{(1,2)}"),
    ("\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", "\\boxed{\\begin{pmatrix}1&2\\\\3&5\\end{pmatrix}}"),
    ("\\text{odd}", "\\boxed{\\text{even}}"),
    ("d", "\\boxed{\\text{E}}"),
    ("42", "The answer is \\boxed{5}"),
    ("42", ""),
]


@pytest.mark.parametrize("gold,completion", EQUAL)
def test_equal_answers(reward, gold, completion):
    assert reward.score([gold], [completion]) == [1.0]


@pytest.mark.parametrize("gold,completion", DIFFERENT)
def test_different_answers(reward, gold, completion):
    assert reward.score([gold], [completion]) == [0.0]


def test_batch_matches_single_calls(reward):
    golds = [gold for gold, _ in EQUAL + DIFFERENT]
    completions = [completion for _, completion in EQUAL + DIFFERENT]
    assert reward.score(golds, completions) == [1.0] * len(EQUAL) + [0.0] * len(DIFFERENT)


@pytest.mark.parametrize("gold", [None, "", "   ", "\\frac{", "#### "])
def test_unreadable_gold_scores_none(reward, gold):
    assert reward.score([gold], ["\\boxed{1}"]) == [None]


# -------------------------------------------------------------------------------------------------------------- API


def test_reward_has_trl_signature_and_stable_name():
    assert correctness_reward.__name__ == "correctness_reward"
    assert CorrectnessReward(timeout_seconds=1.0).__name__ == "correctness_reward"
    scores = correctness_reward(
        prompts=["p1", "p2"],
        completions=["#### 72", "so \\boxed{71}"],
        completion_ids=[[1], [2]],
        answer=["72", "72"],
        trainer_state=None,
    )
    assert scores == [1.0, 0.0]


def test_chat_completions_and_scalar_answer():
    completions = [
        [{"role": "assistant", "content": "The answer is \\boxed{\\frac{1}{2}}"}],
        [{"role": "assistant", "content": [{"type": "text", "text": "#### 0.5"}]}],
        [{"role": "assistant", "content": "#### 0.4"}],
    ]
    assert correctness_reward(completions, answer="0.5") == [1.0, 1.0, 0.0]


def test_numeric_gold_column():
    assert correctness_reward(["#### 72", "\\boxed{\\frac{1}{2}}", "#### 3"], answer=[72, 0.5, 4]) == [1.0, 1.0, 0.0]


def test_answer_column_must_match_completions():
    with pytest.raises(ValueError):
        correctness_reward(["#### 1", "#### 2"], answer=["1", "2", "3"])
    with pytest.raises(ValueError):
        correctness_reward.score(["1"], ["#### 1", "#### 2"])


def test_public_helpers():
    assert answers_match("\\frac{1}{2}", "Thus the answer is $0.5$.")
    assert not answers_match("\\frac{1}{2}", "Thus the answer is $0.25$.")
    assert extract_final_answer("#### 18") == "18"
    assert rewards.CorrectnessReward is CorrectnessReward


def test_construction_starts_no_process():
    reward = CorrectnessReward()
    assert reward._pool is None
    # Plain numbers and plain text are decided in this process.
    assert reward(["#### 1,234", "\\boxed{\\text{Evelyn}}"], answer=["1234", "Evelyn"]) == [1.0, 1.0]
    assert reward._pool is None


def test_plain_numbers_never_reach_the_pool(shared_data, monkeypatch):
    """GSM8K-style answers are decided by the fast path: starting a pool would raise here."""
    reward = CorrectnessReward()
    monkeypatch.setattr(reward, "_get_pool", lambda: pytest.fail("the fast path started the worker pool"))
    lines = (shared_data / "gsm8k_test.jsonl").read_text().splitlines()[:200]
    golds = [json.loads(line)["answer"].rsplit("####", 1)[1].strip() for line in lines]
    completions = [f"Let me think. The answer is \\boxed{{{gold}}}." for gold in golds]
    assert reward(completions, answer=golds) == [1.0] * len(golds)
    assert (
        reward(["#### 5 cm", "x = 50\\%", "#### -3.0", "\\boxed{\\dfrac{3}{4}}"], answer=["5", "0.5", "-3", "0.75"])
        == [1.0] * 4
    )


def test_parent_process_never_imports_sympy_for_plain_answers():
    script = textwrap.dedent(
        """
        import sys
        from rewards import correctness_reward
        scores = correctness_reward(["#### 72", "\\\\boxed{\\\\frac{1}{2}}", "\\\\boxed{\\\\text{odd}}"],
                                    answer=["72", "0.5", "odd"])
        assert scores == [1.0, 1.0, 1.0], scores
        print("sympy" in sys.modules, "latex2sympy2_extended" in sys.modules)
        """
    )
    output = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True, timeout=120
    )
    assert output.stdout.split() == ["False", "False"]


def test_pickle_round_trip_before_and_after_the_pool_starts():
    reward = CorrectnessReward(timeout_seconds=3.0)
    clone = pickle.loads(pickle.dumps(reward))
    assert clone.__name__ == "correctness_reward" and clone.timeout_seconds == 3.0
    assert reward(["\\boxed{(x+1)^2}"], answer=["x^2+2x+1"]) == [1.0]
    assert reward._pool is not None
    clone = pickle.loads(pickle.dumps(reward))
    assert clone._pool is None and clone.__name__ == "correctness_reward"
    assert clone(["\\boxed{(x-1)^2}", "\\boxed{(x+1)^2}"], answer="x^2+2x+1") == [0.0, 1.0]
    clone.close()
    reward.close()


def test_default_instance_pickles():
    clone = pickle.loads(pickle.dumps(correctness_reward))
    assert clone.__name__ == correctness_reward.__name__


def test_invalid_timeout():
    with pytest.raises(ValueError):
        CorrectnessReward(timeout_seconds=0)
