"""Batched greedy generation for evaluation, with the thought force-closed at a budget for the truncation baseline.

Transformers' `generate` is the engine (batched, left-padded, greedy), on whatever device the model is on.
"""

from __future__ import annotations

import logging
from typing import Any

from cotx_rl.budget import THINK_END, THINK_START
from cotx_rl.chat import render_prompts

logger = logging.getLogger(__name__)


class ForceCloseThought:
    """A logits processor that makes `</think>` the only choice once a thought has `max_thinking_tokens` tokens.

    The truncation baseline: the student's reasoning cut at N tokens and the thought closed before the answer. A
    student never trained to answer right after a cut tends to go on reasoning after `</think>`; with
    `max_answer_tokens` the answer is cut too (EOS is forced), so the baseline cannot think on past its budget.
    """

    def __init__(
        self,
        think_start_id: int,
        think_end_id: int,
        max_thinking_tokens: int,
        prompt_length: int,
        eos_token_id: int | None = None,
        max_answer_tokens: int | None = None,
    ):
        self.start_id, self.end_id = think_start_id, think_end_id
        self.max_thinking_tokens, self.prompt_length = max_thinking_tokens, prompt_length
        self.eos_id, self.max_answer_tokens = eos_token_id, max_answer_tokens

    def __call__(self, input_ids, scores):
        generated = input_ids[:, self.prompt_length :]
        opened = (generated == self.start_id).cumsum(dim=1) > 0
        closed_at = (generated == self.end_id).cumsum(dim=1) > 0
        closed = closed_at.any(dim=1)
        # Tokens after <think> so far (the <think> token itself excluded).
        thinking = opened.sum(dim=1) - opened.any(dim=1).long()
        _only(scores, opened.any(dim=1) & ~closed & (thinking >= self.max_thinking_tokens), self.end_id)
        if self.max_answer_tokens is not None and self.eos_id is not None:
            answer = closed_at.sum(dim=1) - closed.long()  # tokens after the first </think>
            _only(scores, closed & (answer >= self.max_answer_tokens), self.eos_id)
        return scores


def _only(scores, rows, token_id: int) -> None:
    """Leave `token_id` the only possible next token in the masked rows."""
    import torch

    if rows.any():
        forced = torch.full_like(scores[rows], float("-inf"))
        forced[:, token_id] = 0.0
        scores[rows] = forced


def generate(
    model: Any,
    tokenizer: Any,
    user_texts: list[str],
    max_new_tokens: int,
    batch_size: int = 64,
    close_thought_at: int | None = None,
    desc: str = "generate",
    max_answer_tokens: int | None = None,
) -> tuple[list[str], list[list[int]]]:
    """Greedy completions for chat prompts: `(texts, completion_ids)`, in input order.

    Prompts are sorted by length so that a batch pads little; `close_thought_at` forces `</think>` after that many
    thinking tokens, and `max_answer_tokens` then caps what follows it.
    """
    import torch
    from tqdm.auto import tqdm
    from transformers import LogitsProcessorList

    tokenizer.padding_side = "left"
    prompts = render_prompts(tokenizer, user_texts)
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
                processors = LogitsProcessorList(
                    [ForceCloseThought(*markers, close_thought_at, width, tokenizer.eos_token_id, max_answer_tokens)]
                )
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


def vllm_usable() -> bool:
    """vLLM is installed and a GPU is there to run it."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return False
    import torch

    return torch.cuda.is_available()


class VLLMGenerator:
    """Greedy generation with a vLLM engine (GPU machines), same contract as [`generate`].

    The truncation baseline runs in two passes: the thought is generated up to `close_thought_at` tokens (stopping at
    `</think>`), closed when it is still open, and the answer generated after it.
    """

    def __init__(self, model_path: str, dtype: str = "auto", **engine_kwargs: Any):
        from vllm import LLM

        self.llm = LLM(model=model_path, dtype=dtype, **engine_kwargs)

    def generate(
        self,
        tokenizer: Any,
        user_texts: list[str],
        max_new_tokens: int,
        close_thought_at: int | None = None,
        max_answer_tokens: int | None = None,
    ) -> tuple[list[str], list[list[int]]]:
        from vllm import SamplingParams

        prompts = render_prompts(tokenizer, user_texts)
        if close_thought_at is None:
            outputs = self.llm.generate(prompts, SamplingParams(temperature=0.0, max_tokens=max_new_tokens))
            return [o.outputs[0].text for o in outputs], [list(o.outputs[0].token_ids) for o in outputs]
        # +1: the <think> token itself comes before the thinking tokens.
        thought = SamplingParams(
            temperature=0.0, max_tokens=close_thought_at + 1, stop=[THINK_END], include_stop_str_in_output=True
        )
        first = self.llm.generate(prompts, thought)
        heads, head_ids = [], []
        for output in first:
            text, ids = output.outputs[0].text, list(output.outputs[0].token_ids)
            if THINK_END not in text:
                closing = f"\n{THINK_END}\n" if not text.endswith("\n") else f"{THINK_END}\n"
                text += closing
                ids += tokenizer(closing, add_special_tokens=False)["input_ids"]
            heads.append(text)
            head_ids.append(ids)
        rest = [max(1, min(max_new_tokens - len(ids), max_answer_tokens or max_new_tokens)) for ids in head_ids]
        second = self.llm.generate(
            [prompt + head for prompt, head in zip(prompts, heads)],
            [SamplingParams(temperature=0.0, max_tokens=n) for n in rest],
        )
        texts = [head + o.outputs[0].text for head, o in zip(heads, second)]
        ids = [h + list(o.outputs[0].token_ids) for h, o in zip(head_ids, second)]
        return texts, ids
