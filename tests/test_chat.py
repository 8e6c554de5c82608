"""`cotx_rl.chat`: SFT trains on the prompt exactly as generation renders and tokenizes it."""

from __future__ import annotations

import pytest

from cotx_rl.chat import prompt_messages, render_prompts, sft_example


@pytest.mark.parametrize("add_bos_token", [False, True], ids=["bos-from-template", "tokenizer-adds-bos-too"])
def test_sft_prompt_tokens_are_the_generation_prompt_tokens(shared_data, add_bos_token):
    """The R1-Distill template writes the BOS itself. Generation tokenizes the rendered prompt without special tokens;
    TRL tokenizes SFT text with them, so for a tokenizer that also adds a BOS (`add_bos_token`, as Llama-style
    tokenizers do) the template's is left out of the SFT text: both see the same ids, with one BOS."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(
        shared_data / "real" / "tokenizers" / "deepseek-r1-distill-qwen", add_bos_token=add_bos_token
    )
    row = {"question": "What is 2 + 3?", "reasoning": "2 + 3 = 5.", "response": "\\boxed{5}", "budget_mode": "max",
           "budget_tokens": 64}  # fmt: skip
    user = prompt_messages(row["question"], "max", 64)[0]["content"]
    generation_ids = tokenizer(render_prompts(tokenizer, [user])[0], add_special_tokens=False)["input_ids"]
    sft_ids = tokenizer(sft_example(tokenizer, row)["prompt"])["input_ids"]  # as TRL tokenizes it
    assert sft_ids == generation_ids
    assert sft_ids.count(tokenizer.bos_token_id) == 1
