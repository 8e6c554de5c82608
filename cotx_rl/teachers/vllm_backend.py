"""A teacher on vLLM's offline engine (`vllm.LLM`), for GPU machines with vLLM installed.

vLLM is imported only in this module and only when the teacher is made, so the package works without it. The engine
starts on first use, after a stage has checked its inputs.
"""

from __future__ import annotations

import logging
from pathlib import Path

from cotx_rl.io import StageInputError, looks_like_local_path
from cotx_rl.teachers.base import (
    Teacher,
    TeacherOutput,
    check_extra_options,
    check_model_path,
    check_sampling,
    split_thinking,
)

logger = logging.getLogger(__name__)

MISSING_VLLM = "The vllm teacher needs `pip install vllm` on a GPU machine; use teacher: transformers or openai here."
# Settings the teacher takes from its own recipe keys; `vllm_engine_kwargs` and `extra_sampling` may not set them too.
OWN_ENGINE_KWARGS = {"model", "dtype", "seed"}
OWN_SAMPLING_PARAMS = {"temperature", "top_p", "max_tokens", "n", "seed"}


class VLLMTeacher(Teacher):
    """Traces from `vllm.LLM` with `SamplingParams`; chat prompts when the tokenizer has a template.

    A trace is finished unless vLLM reports `finish_reason == "length"` (`max_new_tokens` reached). Several samples of
    one problem are rows of their own (the same question again): vLLM draws each with its own random state.

    Args:
        model (`str`): hub name or local folder of the model.
        system_prompt (`str`, *optional*): system message sent before each problem.
        temperature (`float`): sampling temperature; 0 is greedy.
        top_p (`float`): nucleus sampling threshold.
        max_new_tokens (`int`): most tokens generated per trace.
        dtype (`str`): weights dtype (`auto`, `bfloat16`, ...).
        seed (`int`): the engine's seed.
        extra_sampling (`dict`, *optional*): more `SamplingParams` (`top_k`, `min_p`, `repetition_penalty`, ...).
        engine_kwargs (`dict`, *optional*): passed to `vllm.LLM` (`tensor_parallel_size`, `gpu_memory_utilization`,
            `max_model_len`, ...): the recipe's `vllm_engine_kwargs`.
    """

    name = "vllm"

    def __init__(
        self,
        model: str | None,
        system_prompt: str | None = None,
        temperature: float = 0.6,
        top_p: float = 0.95,
        max_new_tokens: int = 4096,
        dtype: str = "auto",
        seed: int = 0,
        extra_sampling: dict | None = None,
        engine_kwargs: dict | None = None,
    ):
        try:
            import vllm  # noqa: F401 (only whether it imports)
        except ImportError as error:
            raise StageInputError(MISSING_VLLM) from error
        self.model_name = model
        self.system_prompt = system_prompt
        self.temperature, self.top_p, self.max_new_tokens = temperature, top_p, max_new_tokens
        self.dtype, self.seed = dtype, seed
        self.extra_sampling, self.engine_kwargs = dict(extra_sampling or {}), dict(engine_kwargs or {})
        self._llm = None

    @property
    def label(self) -> str:
        return f"{self.name}:{self.model_name}"

    def check(self) -> None:
        check_model_path(self.model_name, self.name)
        check_sampling(self.temperature, self.top_p, self.max_new_tokens)
        check_extra_options(self.engine_kwargs, OWN_ENGINE_KWARGS, "vllm_engine_kwargs", self.name)
        check_extra_options(self.extra_sampling, OWN_SAMPLING_PARAMS, "extra_sampling", self.name)

    @property
    def llm(self):
        """The vLLM engine (started on first use)."""
        if self._llm is None:
            from vllm import LLM

            self.check()
            name = str(self.model_name)
            model = str(Path(name).expanduser()) if looks_like_local_path(name) else name
            self._llm = LLM(model=model, dtype=self.dtype, seed=self.seed, **self.engine_kwargs)
        return self._llm

    def _sampling_params(self):
        from vllm import SamplingParams

        # Greedy decoding ignores top_p, but vLLM rejects top_p < 1 together with temperature 0 in some versions.
        top_p = self.top_p if self.temperature > 0 else 1.0
        return SamplingParams(
            temperature=self.temperature, top_p=top_p, max_tokens=self.max_new_tokens, **self.extra_sampling
        )

    def _run(self, user_texts: list[str], system_prompt: str | None) -> list[tuple[str, bool]]:
        """(text, finished) per user turn."""
        llm, params = self.llm, self._sampling_params()
        if getattr(llm.get_tokenizer(), "chat_template", None):
            head = [{"role": "system", "content": system_prompt}] if system_prompt else []
            conversations = [[*head, {"role": "user", "content": text}] for text in user_texts]
            results = llm.chat(conversations, sampling_params=params, use_tqdm=False)
        else:
            prompts = [f"{system_prompt}\n\n{text}" if system_prompt else text for text in user_texts]
            results = llm.generate(prompts, sampling_params=params, use_tqdm=False)
        return [(result.outputs[0].text, result.outputs[0].finish_reason != "length") for result in results]

    def generate(self, rows: list[dict]) -> list[TeacherOutput]:
        outputs = []
        for text, finished in self._run([row["question"] for row in rows], self.system_prompt):
            reasoning, response = split_thinking(text)
            outputs.append(TeacherOutput(reasoning, response, finished))
        return outputs

    def complete(self, prompts: list[str]) -> list[str]:
        return [text for text, _ in self._run(prompts, None)]

    def close(self) -> None:
        self._llm = None
