"""The teacher interface: one `generate` for traces, one `rewrite` (and `rewrite_batch`) for budgeted rewriting.

`split_thinking`, which splits a raw completion at `</think>`, lives in [`cotx_rl.trace_rows`] and is imported from there.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cotx_rl.io import StageInputError, looks_like_local_path
from cotx_rl.trace_rows import split_thinking

REWRITE_INSTRUCTION = (
    "Rewrite the reasoning below so that it is at most {budget_tokens} tokens long. Keep every step that the final "
    "answer depends on, drop repetition, re-checks and restatements, and end with the same final answer. Reply with "
    "the rewritten reasoning only.\n\nProblem: {question}\n\nReasoning:\n{reasoning}"
)


@dataclass(frozen=True)
class RewriteRequest:
    """One reasoning to rewrite: the trace row (its `question`), the reasoning, and the budget to ask for."""

    row: dict
    reasoning: str
    budget_tokens: int


@dataclass(frozen=True)
class TeacherOutput:
    """One trace: the thinking, the visible response after it, and whether generation ended on its own.

    `error` is set, and the rest empty, when the backend could not get this trace (the openai backend records a
    request the endpoint refused or kept failing, and goes on with the other rows).
    """

    reasoning: str
    response: str
    finished: bool
    error: str | None = None


def check_model_path(model: str | None, backend: str) -> None:
    """A `StageInputError` when a model backend has no `teacher_model`, or a local-looking one that is not a folder."""
    if not model:
        raise StageInputError(f"The {backend} teacher needs teacher_model: a model name or a local model folder.")
    if looks_like_local_path(model):
        path = Path(model).expanduser()
        if not path.exists():
            raise StageInputError(f"teacher_model {model!r} does not exist.")
        if not path.is_dir():
            raise StageInputError(f"teacher_model {model!r} is not a folder; expected a saved model folder.")


def check_sampling(temperature: float, top_p: float, max_new_tokens: int) -> None:
    """A `StageInputError` for sampling settings no backend accepts."""
    if temperature < 0:
        raise StageInputError(f"temperature must be >= 0 (0 for greedy), got {temperature}.")
    if not 0 < top_p <= 1:
        raise StageInputError(f"top_p must be in (0, 1], got {top_p}.")
    if max_new_tokens <= 0:
        raise StageInputError(f"max_new_tokens must be positive, got {max_new_tokens}.")


def check_extra_options(options: dict | None, reserved: set[str], key: str, backend: str) -> dict:
    """The options of a pass-through mapping (`extra_sampling`, `vllm_engine_kwargs`), or a `StageInputError` when
    one of them is a setting that has its own recipe key (two places for one setting would disagree)."""
    options = dict(options or {})
    clashing = sorted(str(name) for name in options if name in reserved)
    if clashing:
        raise StageInputError(
            f"{key} sets {', '.join(repr(name) for name in clashing)}, which the {backend} teacher takes from its own "
            f"recipe keys (temperature, top_p, max_new_tokens, seed, teacher_model, teacher_dtype); set them there."
        )
    return options


class Teacher(ABC):
    """A source of reasoning traces. Backends: procedural, transformers, openai, vllm."""

    name: str = "teacher"

    @property
    def label(self) -> str:
        """What the `teacher` column of a trace records: the backend, and the model for model backends."""
        return self.name

    def check(self) -> None:  # noqa: B027 (optional hook, nothing to check by default)
        """Fail fast, before any work, with a `StageInputError` naming a bad setting (missing model, dead endpoint)."""

    @abstractmethod
    def generate(self, rows: list[dict]) -> list[TeacherOutput]:
        """One trace per problem row (rows carry at least `id` and `question`, and `sample`, the index of the trace
        among a problem's samples, when several are drawn: a row may appear once per sample)."""

    def rewrite(
        self, row: dict, reasoning: str, budget_tokens: int, count_tokens: Callable[[str], int] | None = None
    ) -> str:
        """Reasoning rewritten to fit `budget_tokens`; `count_tokens` measures in the student's tokens when given."""
        return self.rewrite_batch([RewriteRequest(row, reasoning, budget_tokens)], count_tokens)[0]

    def rewrite_batch(
        self, requests: list[RewriteRequest], count_tokens: Callable[[str], int] | None = None
    ) -> list[str | None]:
        """Every request rewritten, in one call to the backend's batch interface ([`Teacher.complete`]).

        The openai backend sends the prompts concurrently, transformers and vLLM generate them together. The text
        after the teacher's own thought is the rewrite (a model that does not think gives its whole reply); None where
        the request failed.
        """
        prompts = [
            REWRITE_INSTRUCTION.format(
                budget_tokens=request.budget_tokens, question=request.row["question"], reasoning=request.reasoning
            )
            for request in requests
        ]
        outputs = self.complete(prompts) if prompts else []
        if len(outputs) != len(prompts):
            raise RuntimeError(f"The {self.name} teacher returned {len(outputs)} rewrites for {len(prompts)} prompts.")
        rewrites = []
        for output in outputs:
            reasoning, response = split_thinking(output) if output is not None else (None, None)
            rewrites.append(response or reasoning)
        return rewrites

    def complete(self, prompts: list[str]) -> list[str | None]:
        """Raw completions for free-form user prompts (used by `rewrite`); model backends implement it. A backend
        whose requests can fail one by one (openai) logs the failure and gives None for that prompt."""
        raise NotImplementedError(f"The {self.name} teacher cannot rewrite traces.")

    def close(self) -> None:  # noqa: B027 (optional hook, nothing to release by default)
        """Release what the backend holds (engines, sessions)."""
