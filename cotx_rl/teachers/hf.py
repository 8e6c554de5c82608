"""A teacher that runs any causal LM with `transformers`: a hub name or a local folder, on GPU or CPU.

Generation is batched with left padding, so every prompt's continuation starts at the same position. The model is
loaded on first use, so that a stage can check all its inputs before paying for the load.
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
# `generate()` arguments the teacher sets from its own recipe keys; `extra_sampling` may not set them too.
OWN_GENERATE_KWARGS = {"temperature", "top_p", "max_new_tokens", "do_sample", "eos_token_id", "pad_token_id"}


class TransformersTeacher(Teacher):
    """Traces from a causal LM loaded with `AutoModelForCausalLM` and `AutoTokenizer`.

    Prompts go through the tokenizer's chat template when it has one (with the system prompt first, if given);
    a tokenizer without a template gets the question itself. A trace that reaches `max_new_tokens` without an
    end-of-sequence token is marked unfinished.

    Args:
        model (`str`): hub name or local folder of the model and its tokenizer.
        system_prompt (`str`, *optional*): system message sent before each problem.
        temperature (`float`): sampling temperature; 0 decodes greedily.
        top_p (`float`): nucleus sampling threshold.
        max_new_tokens (`int`): most tokens generated per trace.
        batch_size (`int`): prompts per `generate` call.
        dtype (`str`): weights dtype (`auto`, `bfloat16`, `float16`, `float32`).
        seed (`int`): seeds sampling once, when the model is loaded.
        extra_sampling (`dict`, *optional*): more `generate()` arguments (`top_k`, `min_p`, `repetition_penalty`, ...).
    """

    name = "transformers"

    def __init__(
        self,
        model: str | None,
        system_prompt: str | None = None,
        temperature: float = 0.6,
        top_p: float = 0.95,
        max_new_tokens: int = 4096,
        batch_size: int = 8,
        dtype: str = "auto",
        seed: int = 0,
        extra_sampling: dict | None = None,
    ):
        self.model_name = model
        self.system_prompt = system_prompt
        self.temperature, self.top_p, self.max_new_tokens = temperature, top_p, max_new_tokens
        self.batch_size, self.dtype, self.seed = batch_size, dtype, seed
        self.extra_sampling = dict(extra_sampling or {})
        self._model = None
        self._tokenizer = None

    @property
    def label(self) -> str:
        return f"{self.name}:{self.model_name}"

    def check(self) -> None:
        check_model_path(self.model_name, self.name)
        check_sampling(self.temperature, self.top_p, self.max_new_tokens)
        if self.batch_size <= 0:
            raise StageInputError(f"batch_size must be positive, got {self.batch_size}.")
        check_extra_options(self.extra_sampling, OWN_GENERATE_KWARGS, "extra_sampling", self.name)
        self._torch_dtype()

    def _torch_dtype(self):
        import torch

        if self.dtype == "auto":
            return "auto"
        dtype = getattr(torch, str(self.dtype), None)
        if not isinstance(dtype, torch.dtype):
            raise StageInputError(f"teacher_dtype {self.dtype!r} is not a torch dtype; use auto, bfloat16, float32.")
        return dtype

    @property
    def tokenizer(self):
        """The teacher's tokenizer (loaded on first use, padding on the left)."""
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(self._source())
            tokenizer.padding_side = "left"
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
            self._tokenizer = tokenizer
        return self._tokenizer

    @property
    def model(self):
        """The teacher model (loaded on first use, on the GPUs when there are any)."""
        if self._model is None:
            import torch
            from transformers import AutoModelForCausalLM, set_seed

            set_seed(self.seed)
            device_map = "auto" if torch.cuda.is_available() else None
            model = AutoModelForCausalLM.from_pretrained(
                self._source(), dtype=self._torch_dtype(), device_map=device_map
            )
            self._model = model.eval()
            logger.info("Loaded teacher %s on %s.", self.model_name, self._model.device)
        return self._model

    def _source(self) -> str:
        self.check()
        name = str(self.model_name)
        return str(Path(name).expanduser()) if looks_like_local_path(name) else name

    def prompt_text(self, user_text: str, system_prompt: str | None = None) -> str:
        """The text the model continues: the chat template applied to one user turn, or the turn itself."""
        tokenizer = self.tokenizer
        if not getattr(tokenizer, "chat_template", None):
            return f"{system_prompt}\n\n{user_text}" if system_prompt else user_text
        messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
        messages.append({"role": "user", "content": user_text})
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def _eos_token_ids(self) -> list[int]:
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        return [eos] if isinstance(eos, int) else list(eos or [])

    def _generate_texts(self, prompts: list[str]) -> list[tuple[str, bool]]:
        """(decoded continuation, ended with an end-of-sequence token) per prompt text."""
        import torch

        tokenizer, model, eos_ids = self.tokenizer, self.model, self._eos_token_ids()
        # A chat template already writes the special tokens the model expects (BOS); adding them again doubles them.
        add_special_tokens = not getattr(tokenizer, "chat_template", None)
        sampling = {"do_sample": False}
        if self.temperature > 0:
            sampling = {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p}
        results = []
        for start in range(0, len(prompts), self.batch_size):
            batch = prompts[start : start + self.batch_size]
            encoded = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=add_special_tokens)
            encoded = encoded.to(model.device)
            with torch.no_grad():
                output = model.generate(
                    **encoded,
                    max_new_tokens=self.max_new_tokens,
                    eos_token_id=eos_ids or None,
                    pad_token_id=tokenizer.pad_token_id,
                    **sampling,
                    **self.extra_sampling,
                )
            new_tokens = output[:, encoded["input_ids"].shape[1] :].tolist()
            for ids in new_tokens:
                finished = any(token in eos_ids for token in ids)
                results.append((tokenizer.decode(ids, skip_special_tokens=True), finished))
        return results

    def generate(self, rows: list[dict]) -> list[TeacherOutput]:
        prompts = [self.prompt_text(row["question"], self.system_prompt) for row in rows]
        outputs = []
        for text, finished in self._generate_texts(prompts):
            reasoning, response = split_thinking(text)
            outputs.append(TeacherOutput(reasoning, response, finished))
        return outputs

    def complete(self, prompts: list[str]) -> list[str]:
        return [text for text, _ in self._generate_texts([self.prompt_text(prompt) for prompt in prompts])]

    def close(self) -> None:
        self._model = None
        self._tokenizer = None
