import pickle

import pytest

import rewards
from cotx_rl.budget import render_completion
from rewards.budget_fidelity import fidelity_score


def completion(reasoning: str, answer: str = "\\boxed{8}", mode: str = "exact", declared: int | None = None) -> str:
    return render_completion(reasoning, answer, mode, declared)


def reasoning_of(tokens: int) -> str:
    """A reasoning text of exactly `tokens` thinking tokens in the tiny tokenizer (2 go to the newlines)."""
    return " ".join(["Okay."] * ((tokens - 2) // 2))


@pytest.mark.parametrize(
    "mode,n,target,expected",
    [
        ("exact", 100, 100, 1.0),
        ("exact", 90, 100, 0.9),
        ("exact", 130, 100, 0.7),
        ("exact", 250, 100, 0.0),
        ("max", 40, 100, 1.0),
        ("max", 100, 100, 1.0),
        ("max", 150, 100, 0.5),
        ("max", 200, 100, 0.0),
        ("max", 500, 100, 0.0),
        ("auto", 60, 64, 1 - 4 / 64),
        ("exact", None, 64, 0.0),
        ("auto", 60, None, 0.0),
    ],
)
def test_fidelity_score(mode, n, target, expected):
    assert fidelity_score(mode, n, target) == pytest.approx(expected)


def test_fidelity_reward_counts_student_tokens(tiny_tokenizer):
    reward = rewards.BudgetFidelityReward(tokenizer=tiny_tokenizer)
    texts = [
        completion(reasoning_of(24)),
        completion(reasoning_of(36)),
        completion(reasoning_of(20), mode="max"),
        completion(reasoning_of(36), mode="max"),
        completion(reasoning_of(20), mode="auto", declared=24),
        completion(reasoning_of(20), mode="exact"),  # an auto row without its <budget> tag
        "\\boxed{8} with no thought",
    ]
    modes = ["exact", "exact", "max", "max", "auto", "auto", "exact"]
    scores = reward(texts, budget_mode=modes, budget_tokens=[24, 24, 24, 24, None, 24, 24])
    assert scores == pytest.approx([1.0, 0.5, 1.0, 0.5, 1 - 4 / 24, 0.0, 0.0])


def test_fidelity_reward_prefers_completion_ids(tiny_tokenizer):
    reward = rewards.BudgetFidelityReward(tokenizer=tiny_tokenizer)
    text = completion(reasoning_of(24))
    ids = tiny_tokenizer(completion(reasoning_of(12)), add_special_tokens=False)["input_ids"]
    # The generated ids are what the student wrote; the text is only their decoding.
    assert reward([text], budget_mode=["exact"], budget_tokens=[24], completion_ids=[ids]) == [0.5]


def test_fidelity_reward_needs_a_tokenizer():
    with pytest.raises(ValueError, match="tokenizer"):
        rewards.budget_fidelity_reward([completion("x")], budget_mode=["exact"], budget_tokens=[8])


def test_fidelity_rejects_unknown_mode(tiny_tokenizer):
    with pytest.raises(ValueError, match="'often'"):
        rewards.BudgetFidelityReward(tokenizer=tiny_tokenizer)([completion("x")], ["often"], [8])


def test_format_reward_per_mode():
    texts = [
        completion("a", mode="exact"),
        completion("a", mode="auto", declared=32),
        completion("a", mode="exact"),
        "<think>\na\n</think>\n",
        "just an answer \\boxed{3}",
    ]
    assert rewards.format_reward(texts, budget_mode=["exact", "auto", "auto", "max", "max"]) == [1, 1, 0, 0, 0]


def test_chat_message_completions(tiny_tokenizer):
    message = [{"role": "assistant", "content": completion(reasoning_of(24))}]
    reward = rewards.BudgetFidelityReward(tokenizer=tiny_tokenizer)
    assert reward([message], budget_mode=["exact"], budget_tokens=[24]) == [1.0]
    assert rewards.format_reward([message], budget_mode=["exact"]) == [1.0]


def test_composite_is_a_product(tiny_tokenizer):
    reward = rewards.CompositeReward(tokenizer=tiny_tokenizer)
    texts = [
        completion(reasoning_of(24), "\\boxed{8}"),  # right and on budget
        completion(reasoning_of(36), "\\boxed{8}"),  # right, 50% over
        completion(reasoning_of(24), "\\boxed{9}"),  # on budget, wrong
    ]
    scores = reward(texts, answer=["8", "8", "8"], budget_mode="exact", budget_tokens=24)
    assert scores == pytest.approx([1.0, 0.5, 0.0])


def test_composite_format_and_efficiency_terms(tiny_tokenizer):
    reward = rewards.CompositeReward(
        tokenizer=tiny_tokenizer, format_weight=0.5, efficiency_weight=1.0, efficiency_max_tokens=100
    )
    small = completion(reasoning_of(24), "\\boxed{8}", "auto", 24)
    large = completion(reasoning_of(48), "\\boxed{8}", "auto", 48)
    wrong = completion(reasoning_of(24), "\\boxed{7}", "auto", 24)
    scores = reward([small, large, wrong], answer="8", budget_mode="auto", budget_tokens=None)
    assert scores == pytest.approx([1 + 0.5 + 0.76, 1 + 0.5 + 0.52, 0.5])


def test_composite_auto_fidelity_one_sided(tiny_tokenizer):
    # Declared 48, thought for 24: half the declaration under "exact", the full reward under "max".
    short = completion(reasoning_of(24), "\\boxed{8}", "auto", 48)
    over = completion(reasoning_of(72), "\\boxed{8}", "auto", 48)  # 50% over either way
    exact_mode = completion(reasoning_of(12), "\\boxed{8}")  # other modes keep their own rule
    columns = {"answer": "8", "budget_mode": ["auto", "auto", "exact"], "budget_tokens": [None, None, 24]}
    texts = [short, over, exact_mode]
    assert rewards.CompositeReward(tokenizer=tiny_tokenizer)(texts, **columns) == pytest.approx([0.5, 0.5, 0.5])
    one_sided = rewards.CompositeReward(tokenizer=tiny_tokenizer, auto_fidelity="max")
    assert one_sided(texts, **columns) == pytest.approx([1.0, 0.5, 0.5])
    with pytest.raises(ValueError, match="'loose'"):
        rewards.CompositeReward(auto_fidelity="loose")


def test_composite_undefined_when_gold_is_unreadable(tiny_tokenizer):
    reward = rewards.CompositeReward(tokenizer=tiny_tokenizer)
    assert reward([completion("x")], answer=[""], budget_mode=["exact"], budget_tokens=[8]) == [None]


def test_rewards_pickle_with_stable_names(tiny_tokenizer, tmp_path):
    tiny_tokenizer.save_pretrained(tmp_path)
    for name in rewards.REGISTRY:
        kwargs = {"tokenizer": str(tmp_path)} if rewards.registry.accepts(rewards.REGISTRY[name], "tokenizer") else {}
        reward = rewards.load(name, **kwargs)
        assert reward.__name__ == name
        clone = pickle.loads(pickle.dumps(reward))
        assert clone.__name__ == name
    clone = pickle.loads(pickle.dumps(rewards.load("budget_fidelity_reward", tokenizer=str(tmp_path))))
    assert clone([completion(reasoning_of(24))], budget_mode=["exact"], budget_tokens=[24]) == [1.0]


def test_load_by_dotted_path_and_errors():
    assert rewards.load("rewards.format.format_reward") is rewards.format_reward
    composite = rewards.load("rewards.composite.CompositeReward", format_weight=0.2)
    assert composite.format_weight == 0.2
    with pytest.raises(ValueError, match="no_such_reward"):
        rewards.load("no_such_reward")
    with pytest.raises(ValueError, match="nonexistent_module_xyz"):
        rewards.load("nonexistent_module_xyz.reward")
    with pytest.raises(ValueError, match="takes no parameters"):
        rewards.load("format_reward", weight=2)
    with pytest.raises(ValueError, match="colour"):
        rewards.load("composite_reward", colour="red")
