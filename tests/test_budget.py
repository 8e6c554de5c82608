import pytest

from cotx_rl.budget import (
    budget_directive,
    count_reasoning_tokens,
    count_thinking_tokens,
    follows_format,
    parse_completion,
    render_completion,
    render_prompt,
)


def test_directives_follow_design():
    assert budget_directive("exact", 64) == "Think for 64 tokens."
    assert budget_directive("max", 128) == "Think for at most 128 tokens."
    assert budget_directive("auto") == "Choose your thinking budget."
    assert render_prompt("Compute 2 + 3.", "max", 32).splitlines()[-1] == "Think for at most 32 tokens."
    assert render_prompt("Compute 2 + 3.", None) == "Compute 2 + 3."


@pytest.mark.parametrize("mode,budget", [("sometimes", 4), ("exact", 0), ("max", None), ("exact", -3)])
def test_bad_directives_name_the_value(mode, budget):
    with pytest.raises(ValueError, match=repr(mode) if mode == "sometimes" else "budget_tokens"):
        budget_directive(mode, budget)


def test_completion_round_trip():
    text = render_completion("First, 2 + 3 = 5.", "\\boxed{5}", "auto", 24)
    assert text == "<budget>24</budget>\n<think>\nFirst, 2 + 3 = 5.\n</think>\n\\boxed{5}"
    parsed = parse_completion(text)
    assert parsed.well_formed and parsed.declared_budget_tokens == 24 and parsed.has_budget_tag
    assert parsed.reasoning == "First, 2 + 3 = 5." and parsed.answer_text == "\\boxed{5}"
    assert follows_format(text, "auto") and not follows_format(text, "exact")
    plain = render_completion("x", "\\boxed{1}", "exact")
    assert follows_format(plain, "exact") and not follows_format(plain, "auto")


@pytest.mark.parametrize(
    "text",
    [
        "no tags at all \\boxed{3}",
        "<think>\nnever closed",
        "<think>\na\n</think>\n<think>\nb\n</think>\n\\boxed{1}",
        "<budget>lots</budget>\n<think>\na\n</think>\n\\boxed{1}",
        "<budget>0</budget>\n<think>\na\n</think>\n\\boxed{1}",
        "</think> backwards <think>",
    ],
)
def test_malformed_completions(text):
    assert not parse_completion(text).well_formed or not follows_format(text, "auto")


def test_count_uses_ids_when_markers_are_tokens(tiny_tokenizer):
    text = render_completion("First, 14 - 6 = 8.", "\\boxed{8}", "exact")
    # "\n First , 1 4 - 6 = 8 . \n" (numbers are split into digits): the newlines count as thinking tokens too.
    assert count_thinking_tokens(text, tiny_tokenizer) == 11
    ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert count_thinking_tokens(None, tiny_tokenizer, completion_ids=ids) == 11
    assert count_reasoning_tokens("First, 14 - 6 = 8.", tiny_tokenizer) == 11
    assert count_thinking_tokens("no thought here", tiny_tokenizer) is None


def test_count_falls_back_to_text_without_marker_tokens(bpe_tokenizer):
    assert len(bpe_tokenizer("<think>", add_special_tokens=False)["input_ids"]) > 1
    inner = "\nFirst, 12 + 7 = 19.\n"
    expected = len(bpe_tokenizer(inner, add_special_tokens=False)["input_ids"])
    assert count_thinking_tokens(f"<think>{inner}</think>\n\\boxed{{19}}", bpe_tokenizer) == expected
    assert count_thinking_tokens("<think> unclosed", bpe_tokenizer) is None
