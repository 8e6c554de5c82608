"""The teacher interface: one `generate` for traces, one `rewrite` for budgeted rewriting."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cotx_rl.budget import THINK_END, THINK_START
from cotx_rl.io import StageInputError, looks_like_local_path

REWRITE_INSTRUCTION = (
    "Rewrite the reasoning below so that it is at most {budget_tokens} tokens long. Keep every step that the final "
    "answer depends on, drop repetition, re-checks and restatements, and end with the same final answer. Reply with "
    "the rewritten reasoning only.\n\nProblem: {question}\n\nReasoning:\n{reasoning}"
)


@dataclass(frozen=True)
class TeacherOutput:
    """One trace: the thinking, the visible response after it, and whether generation ended on its own."""

    reasoning: str
    response: str
    finished: bool


def split_thinking(text: str) -> tuple[str, str]:
    """Split a teacher's raw text into (reasoning, response).

    R1-style models write `<think>...</think>` (some templates open the tag in the prompt, so only `</think>` shows);
    text without the closing tag is all reasoning (a trace cut by the length limit).
    """
    if THINK_END in text:
        reasoning, response = text.split(THINK_END, 1)
        reasoning = reasoning.split(THINK_START, 1)[-1]
        return reasoning.strip(), response.strip()
    return text.split(THINK_START, 1)[-1].strip(), ""


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
        """One trace per problem row (rows carry at least `id` and `question`)."""

    def rewrite(
        self, row: dict, reasoning: str, budget_tokens: int, count_tokens: Callable[[str], int] | None = None
    ) -> str:
        """Reasoning rewritten to fit `budget_tokens`; `count_tokens` measures in the student's tokens when given."""
        prompt = REWRITE_INSTRUCTION.format(budget_tokens=budget_tokens, question=row["question"], reasoning=reasoning)
        (output,) = self.complete([prompt])
        return split_thinking(output)[1] or split_thinking(output)[0]

    def complete(self, prompts: list[str]) -> list[str]:
        """Raw completions for free-form user prompts (used by `rewrite`); model backends implement it."""
        raise NotImplementedError(f"The {self.name} teacher cannot rewrite traces.")

    def close(self) -> None:  # noqa: B027 (optional hook, nothing to release by default)
        """Release what the backend holds (engines, sessions)."""
