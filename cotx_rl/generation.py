"""Batched greedy generation for evaluation, with the thought force-closed at a budget for the truncation baseline.

Transformers' `generate` is the engine here (vLLM, when installed, is used by `cotx_rl.eval` for plain prompts).
"""

from __future__ import annotations

import logging
from typing import Any

from cotx_rl.budget import THINK_END, THINK_START

logger = logging.getLogger(__name__)


class ForceCloseThought:
    """A logits processor that makes `</think>` the only choice once a thought has `max_thinking_tokens` tokens.

    The truncation baseline: the student's reasoning cut at N tokens and the thought closed before the answer.
    """

    def __init__(self, think_start_id: int, think_end_id: int, max_thinking_tokens: int, prompt_length: int):
        self.start_id, self.end_id = think_start_id, think_end_id
        self.max_thinking_tokens, self.prompt_length = max_thinking_tokens, prompt_length

    def __call__(self, input_ids, scores):
        import torch

        generated = input_ids[:, self.prompt_length :]
        opened = (generated == self.start_id).cumsum(dim=1) > 0
        closed = (generated == self.end_id).any(dim=1)
        # Tokens after <think> so far (the <think> token itself excluded).
        thinking = opened.sum(dim=1) - opened.any(dim=1).long()
        force = opened.any(dim=1) & ~closed & (thinking >= self.max_thinking_tokens)
        if force.any():
            forced = torch.full_like(scores[force], float("-inf"))
            forced[:, self.end_id] = 0.0
            scores[force] = forced
        return scores


def chat_prompts(tokenizer: Any, user_texts: list[str]) -> list[str]:
    return [
        tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)
        for text in user_texts
    ]


def generate(
    model: Any,
    tokenizer: Any,
    user_texts: list[str],
    max_new_tokens: int,
    batch_size: int = 64,
    close_thought_at: int | None = None,
    desc: str = "generate",
) -> tuple[list[str], list[list[int]]]:
    """Greedy completions for chat prompts: `(texts, completion_ids)`, in input order.

    Prompts are sorted by length so that a batch pads little; `close_thought_at` forces `</think>` after that many
    thinking tokens.
    """
    import torch
    from tqdm.auto import tqdm
    from transformers import LogitsProcessorList

    tokenizer.padding_side = "left"
    prompts = chat_prompts(tokenizer, user_texts)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    texts: list[str] = [""] * len(prompts)
    ids: list[list[int]] = [[] for _ in prompts]
    markers = tokenizer.convert_tokens_to_ids([THINK_START, THINK_END])
    model.eval()
    with tqdm(total=len(prompts), desc=desc, unit="completion", leave=False) as progress:
        for first in range(0, len(order), batch_size):
            batch = order[first : first + batch_size]
            encoded = tokenizer(
                [prompts[i] for i in batch], return_tensors="pt", padding=True, add_special_tokens=False
            )
            encoded = encoded.to(model.device)
            processors = None
            if close_thought_at is not None:
                width = encoded["input_ids"].shape[1]
                processors = LogitsProcessorList([ForceCloseThought(*markers, close_thought_at, width)])
            with torch.no_grad():
                output = model.generate(
                    **encoded,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    logits_processor=processors,
                    pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=tokenizer.eos_token_id,
                )
            for row, index in enumerate(batch):
                completion = output[row, encoded["input_ids"].shape[1] :].tolist()
                while completion and completion[-1] == tokenizer.pad_token_id:
                    completion.pop()
                ids[index] = completion
                texts[index] = tokenizer.decode(completion, skip_special_tokens=True)
            progress.update(len(batch))
    return texts, ids
