"""Generation with a budget: batched greedy generation (transformers or vLLM) with a hard stop on the thought.

The hard stop is a safety net for serving a student. A thought that reaches its limit is closed by inserting
`</think>`, and what follows the thought is capped at `max_answer_tokens` (then the end of sequence is forced). The
limit is N in `max` mode, N plus a tolerance in `exact` mode, and in `auto` mode the budget the student declares
(`<budget>N</budget>`, read from the generated ids as it is written) plus the tolerance ([`hard_stop_limit`]). The
truncation baseline of evaluation is the same stop without a directive.

With transformers a logits processor ([`ForceCloseThought`]) stops the thought within one `generate` call. vLLM's
engine takes no per-request logits processor (V1), so [`VLLMGenerator`] generates in calls: the `<budget>`
declaration (auto mode), then the thought up to its limit (stopping at `</think>`, cut back to the limit and closed
when it ran over), then the answer, each call continuing from token-id prompts, so that no second BOS is added.

When the chat template opens the thought itself (its generation prompt ends in `<think>`), the thinking tokens count
from the prompt's `<think>`, and the completions returned start with that `<think>` again, so that they parse and
count like any other.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from typing import Any

from cotx_rl.budget import (
    BUDGET_END,
    BUDGET_MODES,
    BUDGET_START,
    THINK_END,
    THINK_START,
    count_thinking_tokens,
    parse_completion,
    render_prompt,
)
from cotx_rl.chat import render_prompts, template_opens_thought
from cotx_rl.io import StageInputError
from rewards.correctness import extract_final_answer

logger = logging.getLogger(__name__)
# The hard stop is on by default where the directive itself is a ceiling.
HARD_STOP_BY_DEFAULT = {"exact": False, "max": True, "auto": False}
DEFAULT_HARD_STOP_TOLERANCE = 0.1
# vLLM: tokens allowed for the `<budget>N</budget>` line in auto mode, and before `<think>` in the thought call.
DECLARATION_TOKENS = 16
HEAD_SLACK_TOKENS = 8
_DECLARED = re.compile(r"^\s*(\d+)\s*$")


def hard_stop_limit(budget_tokens: int, tolerance: float = 0.0) -> int:
    """Most thinking tokens a hard stop allows for a budget: `N + ceil(tolerance * N)`.

    Any positive tolerance leaves at least one token of slack; `round` keeps `0.1 * 30` from rounding up to 4.
    """
    return int(budget_tokens) + math.ceil(round(tolerance * budget_tokens, 6))


@dataclass(frozen=True)
class ThoughtLimit:
    """How a hard stop caps the completions of one call.

    Args:
        max_thinking_tokens: the limit of the thought; in auto mode (`declared_tolerance` set), the limit until a
            budget is declared (None: none).
        max_answer_tokens: tokens allowed after the thought closes (then the end of sequence is forced).
        declared_tolerance: auto mode: once the student declares `<budget>N</budget>`, the limit becomes
            `hard_stop_limit(N, declared_tolerance)`.
    """

    max_thinking_tokens: int | None
    max_answer_tokens: int | None = None
    declared_tolerance: float | None = None

    @classmethod
    def for_mode(
        cls,
        budget_mode: str,
        budget_tokens: int | None,
        tolerance: float = DEFAULT_HARD_STOP_TOLERANCE,
        max_answer_tokens: int | None = None,
        max_budget_tokens: int | None = None,
    ) -> ThoughtLimit:
        """The hard stop of a budget mode: N (max), N + tolerance (exact), declared + tolerance (auto).

        `max_budget_tokens` caps an auto thought that declares no budget (plus the tolerance).
        """
        if budget_mode == "max":
            return cls(int(budget_tokens), max_answer_tokens)
        if budget_mode == "exact":
            return cls(hard_stop_limit(budget_tokens, tolerance), max_answer_tokens)
        fallback = hard_stop_limit(max_budget_tokens, tolerance) if max_budget_tokens else None
        return cls(fallback, max_answer_tokens, tolerance)


@dataclass
class Generation:
    """One completion: its text and ids (the prompt's `<think>` restored when the template opened the thought),
    whether the hard stop closed its thought, and why it ended: `stop` (end of sequence written by the model),
    `answer_cap` (the end of sequence forced after `max_answer_tokens`) or `length` (`max_new_tokens` reached)."""

    text: str
    token_ids: list[int]
    hard_stopped: bool = False
    finish_reason: str = "stop"


def marker_ids(tokenizer: Any, markers: tuple[str, ...]) -> list[int]:
    """Ids of budget markers that must be single tokens of the student's tokenizer (it has them after SFT)."""
    ids = []
    for marker in markers:
        encoded = tokenizer(marker, add_special_tokens=False)["input_ids"]
        if len(encoded) != 1:
            raise StageInputError(
                f"The hard stop needs {marker!r} as one token of the student's tokenizer, and it is {len(encoded)}: "
                "use a student trained by `cotx-rl sft` (it adds the markers), or turn the hard stop off."
            )
        ids.append(encoded[0])
    return ids


def read_declared(text: str) -> int | None:
    """A declared budget from the text between `<budget>` and `</budget>`: a positive integer, else None."""
    match = _DECLARED.match(text)
    return int(match.group(1)) if match and int(match.group(1)) > 0 else None


def _first_index(mask):
    """Per row, the index of the first True (0 when there is none; check `mask.any(dim=1)`)."""
    import torch

    if mask.shape[1] == 0:  # the first step: nothing generated yet
        return mask.new_zeros(mask.shape[0], dtype=torch.long)
    return mask.int().argmax(dim=1)


class ForceCloseThought:
    """A logits processor that makes `</think>` the only choice once a thought has reached its limit.

    A thought runs from the first `<think>` of the completion (or from the prompt's last `<think>` when
    `thought_open_at_start`) to the first `</think>` after it. Once it has `max_thinking_tokens` thinking tokens,
    `</think>` is forced; with `max_answer_tokens`, the end of sequence is forced that many tokens after the thought
    closed. With `budget_ids` (`<budget>`, `</budget>`) and `declared_tolerance` (auto mode), the limit of a row
    becomes `hard_stop_limit(declared, declared_tolerance)` once its first `<budget>N</budget>` is complete; `decode`
    turns the ids between the tags into text. Rows that have ended (an end of sequence) are left alone.

    After generation, `hard_stopped` and `answer_capped` say per row whether the stop fired (a step where the model's
    own first choice was `</think>` or the end of sequence does not count).
    """

    def __init__(
        self,
        think_start_id: int,
        think_end_id: int,
        max_thinking_tokens: int | None,
        prompt_length: int,
        eos_token_id: int | list[int] | None = None,
        max_answer_tokens: int | None = None,
        thought_open_at_start: bool = False,
        budget_ids: tuple[int, int] | None = None,
        declared_tolerance: float | None = None,
        decode=None,
    ):
        self.start_id, self.end_id = think_start_id, think_end_id
        self.max_thinking_tokens, self.prompt_length = max_thinking_tokens, prompt_length
        self.eos_ids = (
            [] if eos_token_id is None else [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
        )
        self.max_answer_tokens = max_answer_tokens
        self.thought_open_at_start = thought_open_at_start
        self.budget_ids, self.declared_tolerance, self.decode = budget_ids, declared_tolerance, decode
        self.hard_stopped = self.answer_capped = self.limits = self.declared = None

    def _setup(self, input_ids) -> None:
        import torch

        rows = input_ids.shape[0]
        self.hard_stopped = torch.zeros(rows, dtype=torch.bool, device=input_ids.device)
        self.answer_capped = torch.zeros_like(self.hard_stopped)
        unlimited = torch.iinfo(torch.long).max
        limit = self.max_thinking_tokens if self.max_thinking_tokens is not None else unlimited
        self.limits = torch.full((rows,), limit, dtype=torch.long, device=input_ids.device)
        self.declared = [False] * rows
        # Thinking tokens already in the prompt after its last <think> (the template's newline, say).
        self.prompt_thinking = torch.zeros(rows, dtype=torch.long, device=input_ids.device)
        if self.thought_open_at_start:
            prompt = input_ids[:, : self.prompt_length]
            is_start = (prompt == self.start_id).flip(dims=[1])
            from_end = _first_index(is_start)
            self.prompt_thinking = torch.where(is_start.any(dim=1), from_end, torch.zeros_like(from_end))

    def _read_declarations(self, generated, closed) -> None:
        """Auto mode: a row's limit follows its first complete `<budget>N</budget>` written before its thought closed."""
        start_id, end_id = self.budget_ids
        candidates = ((generated == end_id).any(dim=1) | closed).tolist()
        for row, candidate in enumerate(candidates):
            if self.declared[row] or not candidate:
                continue
            self.declared[row] = True  # read once: a declaration after the thought has nothing left to cap
            ids = generated[row].tolist()
            if closed[row] or start_id not in ids or end_id not in ids[ids.index(start_id) :]:
                continue
            first = ids.index(start_id)
            declared = read_declared(self.decode(ids[first + 1 : ids.index(end_id, first)]))
            if declared is not None:
                self.limits[row] = hard_stop_limit(declared, self.declared_tolerance)

    def __call__(self, input_ids, scores):
        import torch

        if self.hard_stopped is None:
            self._setup(input_ids)
        generated = input_ids[:, self.prompt_length :]
        length = generated.shape[1]
        positions = torch.arange(length, device=generated.device).unsqueeze(0)
        finished = torch.zeros_like(self.hard_stopped)
        for eos in self.eos_ids:
            finished |= (generated == eos).any(dim=1)
        if self.thought_open_at_start:
            opened = torch.ones_like(finished)
            start = -1 - self.prompt_thinking  # the prompt's <think>, in completion positions
        else:
            is_start = generated == self.start_id
            opened, start = is_start.any(dim=1), _first_index(is_start)
        is_end = (generated == self.end_id) & (positions > start.unsqueeze(1)) & opened.unsqueeze(1)
        closed, end = is_end.any(dim=1), _first_index(is_end)
        if self.budget_ids is not None and self.declared_tolerance is not None:
            self._read_declarations(generated, closed)
        thinking = torch.where(closed, end, torch.full_like(end, length)) - start - 1
        choice = scores.argmax(dim=-1)
        close_now = opened & ~closed & ~finished & (thinking >= self.limits)
        self.hard_stopped |= close_now & (choice != self.end_id)
        _only(scores, close_now, self.end_id)
        if self.max_answer_tokens is not None and self.eos_ids:
            answer = length - end - 1  # tokens after the closing </think>
            cap_now = closed & ~finished & (answer >= self.max_answer_tokens)
            self.answer_capped |= cap_now & ~torch.isin(choice, torch.tensor(self.eos_ids, device=choice.device))
            _only(scores, cap_now, self.eos_ids[0])
        return scores


def _only(scores, rows, token_id: int) -> None:
    """Leave `token_id` the only possible next token in the masked rows."""
    import torch

    if rows.any():
        forced = torch.full_like(scores[rows], float("-inf"))
        forced[:, token_id] = 0.0
        scores[rows] = forced


def _eos_ids(tokenizer, model=None) -> list[int]:
    """The end-of-sequence ids generation stops at: the tokenizer's, and the model's generation config's."""
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in configured if isinstance(configured, list) else [configured]:
        if value is not None and value not in ids:
            ids.append(value)
    return ids


def _processor(tokenizer, limit: ThoughtLimit, prompt_length: int, eos_ids, thought_open: bool) -> ForceCloseThought:
    think = marker_ids(tokenizer, (THINK_START, THINK_END))
    budget = marker_ids(tokenizer, (BUDGET_START, BUDGET_END)) if limit.declared_tolerance is not None else None
    return ForceCloseThought(
        *think, limit.max_thinking_tokens, prompt_length, eos_ids, limit.max_answer_tokens, thought_open,
        budget_ids=budget, declared_tolerance=limit.declared_tolerance, decode=tokenizer.decode,
    )  # fmt: skip


def _opened_prefix(prompt_ids: list[int], tokenizer) -> list[int]:
    """The prompt's ids from its last `<think>` on: what a completion starts with when the template opened the thought."""
    start_id = tokenizer.convert_tokens_to_ids(THINK_START)
    if start_id not in prompt_ids:
        return []
    return prompt_ids[len(prompt_ids) - 1 - prompt_ids[::-1].index(start_id) :]


def generate(
    model: Any,
    tokenizer: Any,
    user_texts: list[str],
    max_new_tokens: int,
    batch_size: int = 64,
    limit: ThoughtLimit | None = None,
    desc: str = "generate",
    thought_open_at_start: bool | None = None,
) -> list[Generation]:
    """Greedy completions for chat prompts, in input order, with the hard stop of `limit` when given.

    Prompts are sorted by length so that a batch pads little. `thought_open_at_start` (default: read from the chat
    template) says whether the prompt opens the thought; the completions then start with the prompt's `<think>`.
    """
    import torch
    from tqdm.auto import tqdm
    from transformers import LogitsProcessorList

    thought_open = template_opens_thought(tokenizer) if thought_open_at_start is None else thought_open_at_start
    tokenizer.padding_side = "left"
    prompts = render_prompts(tokenizer, user_texts)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    results: list[Generation | None] = [None] * len(prompts)
    eos_ids = _eos_ids(tokenizer, model)
    model.eval()
    with tqdm(total=len(prompts), desc=desc, unit="completion", leave=False) as progress:
        for first in range(0, len(order), batch_size):
            batch = order[first : first + batch_size]
            encoded = tokenizer(
                [prompts[i] for i in batch], return_tensors="pt", padding=True, add_special_tokens=False
            )
            encoded = encoded.to(model.device)
            width = encoded["input_ids"].shape[1]
            processor = _processor(tokenizer, limit, width, eos_ids, thought_open) if limit is not None else None
            with torch.no_grad():
                output = model.generate(
                    **encoded,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    logits_processor=LogitsProcessorList([processor]) if processor else None,
                    pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=eos_ids or None,
                )
            for row, index in enumerate(batch):
                completion = output[row, width:].tolist()
                if processor is not None and processor.answer_capped is not None and processor.answer_capped[row]:
                    reason = "answer_cap"
                else:
                    reason = "stop" if any(t in eos_ids for t in completion) else "length"
                while completion and completion[-1] == tokenizer.pad_token_id:
                    completion.pop()
                if thought_open:
                    prompt_ids = encoded["input_ids"][row][encoded["attention_mask"][row].bool()].tolist()
                    completion = _opened_prefix(prompt_ids, tokenizer) + completion
                stopped = bool(processor is not None and processor.hard_stopped is not None
                               and processor.hard_stopped[row])  # fmt: skip
                results[index] = Generation(
                    tokenizer.decode(completion, skip_special_tokens=True), completion, stopped, reason
                )
            progress.update(len(batch))
    return results


def vllm_usable() -> bool:
    """vLLM is installed and a GPU is there to run it."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return False
    import torch

    return torch.cuda.is_available()


def use_vllm(engine: str) -> bool:
    """Whether `engine` (`auto`, `vllm`, `transformers`) means vLLM here; `vllm` without vLLM and a GPU is an error."""
    if engine == "vllm" and not vllm_usable():
        raise StageInputError("engine vllm needs vLLM installed and a GPU; use transformers here.")
    return engine == "vllm" or (engine == "auto" and vllm_usable())


class VLLMGenerator:
    """Greedy generation with a vLLM engine (GPU machines), same contract as [`generate`].

    Without a limit, one call. With one, the completion is generated in calls, each continuing from the token ids so
    far: the `<budget>` declaration (auto mode: at most `DECLARATION_TOKENS`, stopping at `</budget>`); the thought,
    asking for one token more than the limit leaves (stopping at `</think>`): a thought that ran past its limit is
    cut back to it and closed, as the logits processor would have; then the answer (`max_tokens` =
    `max_answer_tokens`).
    """

    def __init__(self, model_path: str, dtype: str = "auto", **engine_kwargs: Any):
        from vllm import LLM

        self.llm = LLM(model=model_path, dtype=dtype, **engine_kwargs)

    def _call(self, prompt_ids: list[list[int]], max_tokens: list[int], stop_ids: list[int] | None = None):
        """One engine call over token-id prompts; per prompt `(new ids, finish_reason, stop_reason)`."""
        from vllm import SamplingParams

        stop = {"stop_token_ids": stop_ids} if stop_ids else {}
        params = [SamplingParams(temperature=0.0, max_tokens=n, **stop) for n in max_tokens]
        outputs = self.llm.generate([{"prompt_token_ids": ids} for ids in prompt_ids], params)
        results = []
        for output in outputs:
            choice = output.outputs[0]
            ids = list(choice.token_ids)
            reason = getattr(choice, "stop_reason", None)
            # A stop token ends the call; whether the engine lists it among the ids differs between versions.
            if isinstance(reason, int) and (not ids or ids[-1] != reason):
                ids.append(reason)
            results.append((ids, choice.finish_reason, reason))
        return results

    def generate(
        self,
        tokenizer: Any,
        user_texts: list[str],
        max_new_tokens: int,
        limit: ThoughtLimit | None = None,
        thought_open_at_start: bool | None = None,
    ) -> list[Generation]:
        thought_open = template_opens_thought(tokenizer) if thought_open_at_start is None else thought_open_at_start
        prompts = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in render_prompts(tokenizer, user_texts)]
        start_id, end_id = tokenizer.convert_tokens_to_ids([THINK_START, THINK_END])
        if limit is not None:
            start_id, end_id = marker_ids(tokenizer, (THINK_START, THINK_END))
        rows = [_VLLMRow(prompt, thought_open, start_id, end_id, limit) for prompt in prompts]
        if limit is not None:
            if limit.declared_tolerance is not None and not thought_open:
                budget_start, budget_end = marker_ids(tokenizer, (BUDGET_START, BUDGET_END))
                self._step(rows, lambda r: DECLARATION_TOKENS, [budget_end], max_new_tokens)
                for row in rows:
                    row.read_declaration(budget_start, budget_end, tokenizer.decode, limit.declared_tolerance)
            # Each round makes progress, so the loop ends by max_new_tokens at the latest.
            while any(row.thought_room() is not None for row in rows if row.reason is None):
                self._step(rows, _VLLMRow.thought_room, [end_id], max_new_tokens)
                for row in rows:
                    row.cap_thought()
            if limit.max_answer_tokens is not None:
                self._step(rows, lambda r: limit.max_answer_tokens if r.closed() else None, None, max_new_tokens,
                           answer=True)  # fmt: skip
        self._step(rows, lambda r: max_new_tokens, None, max_new_tokens)
        results = []
        for row in rows:
            ids = (_opened_prefix(row.prompt, tokenizer) if thought_open else []) + row.ids
            text = tokenizer.decode(ids, skip_special_tokens=True)
            results.append(Generation(text, ids, row.hard_stopped, row.reason or "length"))
        return results

    def _step(self, rows, room, stop_ids, max_new_tokens: int, answer: bool = False) -> None:
        """Continue every unfinished row by at most `room(row)` tokens (None: leave the row as it is)."""
        active, budgets = [], []
        for row in rows:
            wanted = room(row) if row.reason is None else None
            if wanted is None:
                continue
            left = max_new_tokens - len(row.ids)
            if left <= 0:
                row.reason = "length"
                continue
            active.append(row)
            budgets.append(max(1, min(wanted, left)))
        if not active:
            return
        outputs = self._call([row.prompt + row.ids for row in active], budgets, stop_ids)
        for row, (ids, finish, stop) in zip(active, outputs):
            row.ids += ids
            if finish == "stop" and not (stop_ids and stop in stop_ids):
                row.reason = "stop"  # the end of sequence (or another stop the engine knows)
            elif len(row.ids) >= max_new_tokens:
                row.reason = "length"
            elif answer and finish == "length":
                row.reason = "answer_cap"


class _VLLMRow:
    """One completion being generated in calls by [`VLLMGenerator`]."""

    def __init__(self, prompt: list[int], thought_open: bool, start_id: int, end_id: int, limit: ThoughtLimit | None):
        self.prompt, self.thought_open, self.start_id, self.end_id = prompt, thought_open, start_id, end_id
        self.limit = limit.max_thinking_tokens if limit is not None else None
        self.ids: list[int] = []
        self.hard_stopped = False
        self.reason: str | None = None
        # Thinking tokens already in the prompt after its last <think> (the template's newline, say).
        self.prompt_thinking = 0
        if thought_open and start_id in prompt:
            self.prompt_thinking = prompt[::-1].index(start_id)

    def read_declaration(self, start_id: int, end_id: int, decode, tolerance: float) -> None:
        if start_id in self.ids and end_id in self.ids[self.ids.index(start_id) :]:
            first = self.ids.index(start_id)
            declared = read_declared(decode(self.ids[first + 1 : self.ids.index(end_id, first)]))
            if declared is not None:
                self.limit = hard_stop_limit(declared, tolerance)

    def _start(self) -> int | None:
        """Index in `ids` of the thought's `<think>`: negative when the prompt opened the thought, None before it opens."""
        if self.thought_open:
            return -1 - self.prompt_thinking
        return self.ids.index(self.start_id) if self.start_id in self.ids else None

    def closed(self) -> bool:
        start = self._start()
        return start is not None and self.end_id in self.ids[max(start + 1, 0) :]

    def thinking(self) -> int:
        start = self._start()
        after = max(start + 1, 0)
        end = self.ids.index(self.end_id, after) if self.end_id in self.ids[after:] else len(self.ids)
        return end - start - 1

    def thought_room(self) -> int | None:
        """Tokens to ask for in the next thought call (None: the thought is closed or has no limit).

        One more than the limit leaves, so that a thought that ends right at its limit closes on its own.
        """
        if self.limit is None or self.closed():
            return None
        if self._start() is None:
            return self.limit + 2 + HEAD_SLACK_TOKENS  # room for a few tokens, `<think>`, the thought and its close
        return self.limit - self.thinking() + 1

    def cap_thought(self) -> None:
        """A thought longer than its limit is cut back to the limit and closed, as the logits processor would."""
        start = self._start()
        if self.limit is None or start is None or self.thinking() <= self.limit:
            return
        self.ids = self.ids[: max(0, start + 1 + self.limit)] + [self.end_id]
        self.hard_stopped = True
        self.reason = None


def thinking_tokens_used(text: str, ids: list[int], tokenizer) -> int:
    """Thinking tokens of a completion, also when it is malformed.

    A well-formed completion counts what [`count_thinking_tokens`] counts; otherwise the thought runs from the first
    `<think>` to the first `</think>` after it, or to the end when it never closes.
    """
    counted = count_thinking_tokens(text, tokenizer, ids)
    if counted is not None:
        return counted
    start_id, end_id = tokenizer.convert_tokens_to_ids([THINK_START, THINK_END])
    if start_id not in ids:
        return 0
    start = ids.index(start_id)
    end = ids.index(end_id, start) if end_id in ids[start:] else len(ids)
    return end - start - 1


def completion_fields(generation: Generation, tokenizer) -> dict:
    """What a reader wants of one completion: text, extracted answer, thinking tokens, declared budget, hard stop."""
    return {
        "completion": generation.text,
        "answer": extract_final_answer(generation.text),
        "thinking_tokens": thinking_tokens_used(generation.text, generation.token_ids, tokenizer),
        "declared_budget_tokens": parse_completion(generation.text).declared_budget_tokens,
        "hard_stopped": generation.hard_stopped,
        "completion_tokens": len(generation.token_ids),
        "finish_reason": generation.finish_reason,
    }


class BudgetedGenerator:
    """Serve a budget student: questions in, completions in the budget format out, with a hard stop as a safety net.

    ```python
    from cotx_rl.generate import BudgetedGenerator

    generator = BudgetedGenerator("outputs/tiny/grpo")
    rows = generator.generate(["Compute 3 + 4 * 2."], budget_mode="max", budget_tokens=48)
    rows[0]["answer"], rows[0]["thinking_tokens"], rows[0]["hard_stopped"]
    ```

    Args:
        model: a model folder or hub name (a full model or a LoRA adapter), or a loaded transformers model.
        tokenizer: the student's tokenizer (default: loaded with the model).
        engine: `transformers`, `vllm`, or `auto` (vLLM when it is installed and there is a GPU).
        max_new_tokens: most tokens per completion.
        batch_size: prompts per batch (transformers).
        answer_tokens: tokens allowed after a thought closed by the hard stop (the run's `answer_tokens`).
        hard_stop_tolerance: share of N (exact) or of the declared budget (auto) a thought may run over before the
            hard stop closes it; `max` allows none.
        max_budget_tokens: caps an `auto` thought that declares no budget (plus the tolerance); None: no cap.
        device, dtype: where and in which precision a model given by path is loaded (transformers).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        engine: str = "transformers",
        max_new_tokens: int = 512,
        batch_size: int = 64,
        answer_tokens: int = 16,
        hard_stop_tolerance: float = DEFAULT_HARD_STOP_TOLERANCE,
        max_budget_tokens: int | None = None,
        device: str = "auto",
        dtype: str = "auto",
        work_dir: str = ".",
    ):
        from cotx_rl.models import load_for_inference, load_tokenizer, merged_model_path

        if engine not in ("auto", "vllm", "transformers"):
            raise StageInputError(f"Unknown engine {engine!r}; choose transformers, vllm or auto.")
        if hard_stop_tolerance < 0:
            raise StageInputError(f"hard_stop_tolerance must be >= 0, got {hard_stop_tolerance}.")
        self.max_new_tokens, self.batch_size, self.answer_tokens = max_new_tokens, batch_size, answer_tokens
        self.hard_stop_tolerance, self.max_budget_tokens = hard_stop_tolerance, max_budget_tokens
        self.model = self.vllm = None
        if not isinstance(model, str):
            self.model, self.tokenizer = model, tokenizer
            if tokenizer is None:
                raise StageInputError("A loaded model needs its tokenizer: BudgetedGenerator(model, tokenizer).")
        elif use_vllm(engine):
            self.tokenizer = tokenizer or load_tokenizer(model)
            self.vllm = VLLMGenerator(merged_model_path(model, work_dir), dtype=dtype)
        else:
            self.model, loaded = load_for_inference(model, device, dtype)
            self.tokenizer = tokenizer or loaded

    def complete(self, user_texts: list[str], limit: ThoughtLimit | None = None, desc: str = "generate"):
        """Completions (list of [`Generation`]) for user turns as they are, with the hard stop of `limit`."""
        if self.vllm is not None:
            return self.vllm.generate(self.tokenizer, user_texts, self.max_new_tokens, limit)
        return generate(self.model, self.tokenizer, user_texts, self.max_new_tokens, self.batch_size, limit, desc)

    def limit(self, budget_mode: str | None, budget_tokens: int | None, hard_stop: bool | None = None):
        """The hard stop of a mode, or None when it is off (default: on for `max`, off for `exact` and `auto`)."""
        if budget_mode is None:
            return None
        if not (HARD_STOP_BY_DEFAULT[budget_mode] if hard_stop is None else hard_stop):
            return None
        return ThoughtLimit.for_mode(
            budget_mode, budget_tokens, self.hard_stop_tolerance, self.answer_tokens, self.max_budget_tokens
        )

    def generate(
        self,
        questions: list[str],
        budget_mode: str | None,
        budget_tokens: int | None = None,
        hard_stop: bool | None = None,
        desc: str | None = None,
    ) -> list[dict]:
        """One row per question: `question`, `budget_mode`, `budget_tokens`, `completion`, `answer` (the extracted final
        answer), `thinking_tokens`, `declared_budget_tokens` (auto), `hard_stopped`, `completion_tokens`,
        `finish_reason`.

        `budget_mode` None asks for no budget (no directive, no hard stop). `hard_stop` None takes the mode's default
        (on for `max`).
        """
        check_request(budget_mode, budget_tokens)
        prompts = [render_prompt(q, budget_mode, budget_tokens if budget_mode != "auto" else None) for q in questions]
        limit = self.limit(budget_mode, budget_tokens, hard_stop)
        generations = self.complete(prompts, limit, desc or f"{budget_mode or 'unbudgeted'} {budget_tokens or ''}")
        return [
            {"question": question, "budget_mode": budget_mode, "budget_tokens": budget_tokens}
            | completion_fields(generation, self.tokenizer)
            for question, generation in zip(questions, generations)
        ]


def check_request(budget_mode: str | None, budget_tokens: int | None) -> None:
    """A budget mode and budget that make a directive: N > 0 for exact and max, none for auto."""
    if budget_mode is not None and budget_mode not in BUDGET_MODES:
        raise StageInputError(f"Unknown budget_mode {budget_mode!r}; choose {', '.join(BUDGET_MODES)}.")
    if budget_mode in ("exact", "max") and (
        isinstance(budget_tokens, bool) or not isinstance(budget_tokens, int) or budget_tokens <= 0
    ):
        raise StageInputError(
            f"budget_mode {budget_mode} needs a positive integer budget_tokens, got {budget_tokens!r}."
        )
    if budget_mode == "auto" and budget_tokens is not None:
        raise StageInputError("budget_mode auto takes no budget_tokens: the student declares its own budget.")


def summarize(rows: list[dict]) -> dict:
    """Run-level figures of generated rows: how often the hard stop fired, and the thinking tokens spent."""
    count = len(rows)
    stopped = sum(bool(r["hard_stopped"]) for r in rows)
    return {
        "num_rows": count,
        "num_hard_stopped": stopped,
        "hard_stop_rate": round(stopped / count, 4) if count else None,
        "mean_thinking_tokens": round(sum(r["thinking_tokens"] for r in rows) / count, 2) if count else None,
        "mean_completion_tokens": round(sum(r["completion_tokens"] for r in rows) / count, 2) if count else None,
        "num_without_answer": sum(r["answer"] is None for r in rows),
    }
