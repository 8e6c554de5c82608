"""Teacher settings, shared by the `traces` stage (generation) and the `compress` stage (the `rewrite` compressor)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from cotx_rl.io import StageInputError

TEACHER_BACKENDS = ("procedural", "transformers", "openai", "vllm")


@dataclass
class TeacherArguments:
    """Which teacher writes (or rewrites) traces, and how it samples.

    Every field is a recipe key of the `traces` and `compress` stages.
    """

    teacher: str = field(
        default="procedural",
        metadata={"help": f"Teacher backend: one of {', '.join(TEACHER_BACKENDS)}."},
    )
    teacher_model: str | None = field(
        default=None,
        metadata={
            "help": "Model name or local path (transformers, vllm) or model id served by the endpoint (openai)."
        },
    )
    system_prompt: str | None = field(
        default=None, metadata={"help": "Optional system message sent before each problem (model backends)."}
    )
    temperature: float = field(default=0.6, metadata={"help": "Sampling temperature (0 for greedy)."})
    top_p: float = field(default=0.95, metadata={"help": "Nucleus sampling threshold."})
    max_new_tokens: int = field(
        default=4096, metadata={"help": "Most tokens a teacher may write per trace; longer traces count as truncated."}
    )
    batch_size: int = field(
        default=8, metadata={"help": "Problems per generation batch; also the unit written to disk at a time."}
    )
    teacher_dtype: str = field(
        default="auto",
        metadata={"help": "Weights dtype for the transformers and vllm backends (auto, bfloat16, ...)."},
    )
    base_url: str | None = field(
        default=None,
        metadata={"help": "OpenAI-compatible endpoint, e.g. http://localhost:8000/v1 (default: $OPENAI_BASE_URL)."},
    )
    api_key: str | None = field(
        default=None, metadata={"help": "API key for the endpoint (default: $OPENAI_API_KEY; none for local servers)."}
    )
    max_concurrency: int = field(default=16, metadata={"help": "Requests in flight at once (openai backend)."})
    max_retries: int = field(
        default=5,
        metadata={
            "help": "Retries with exponential backoff of a request that timed out, lost its connection or was "
            "answered 408, 409, 429 or 5xx (openai backend). Other answers (400, 404, 422, ...) are not retried: the "
            "row is recorded as failed and the run goes on (a rejected key, 401 or 403, stops it)."
        },
    )
    request_timeout: float = field(default=600.0, metadata={"help": "Seconds before a request is abandoned."})
    seed: int = field(default=0, metadata={"help": "Seed of the teacher's sampling (procedural: of every trace)."})
    extra_sampling: dict | str | None = field(
        default=None,
        metadata={
            "help": "More sampling options, passed on as they are: into each request's body (openai; e.g. "
            "{top_k: 20, min_p: 0.0} for a vLLM or SGLang server), to vLLM's SamplingParams (vllm), or to generate() "
            "(transformers). A mapping in the recipe, JSON on the command line."
        },
    )
    vllm_engine_kwargs: dict | str | None = field(
        default=None,
        metadata={
            "help": "Settings of vLLM's engine, passed to vllm.LLM (vllm backend): tensor_parallel_size, "
            "gpu_memory_utilization, max_model_len, enable_prefix_caching, ... A mapping in the recipe, JSON on the "
            "command line."
        },
    )
    min_words: int = field(
        default=0,
        metadata={"help": "Procedural teacher: re-verify until a trace has this many words (teachers overthink)."},
    )
    wrong_turn_rate: float = field(
        default=0.15, metadata={"help": "Procedural teacher: chance per step of a caught and corrected mistake."}
    )

    def __post_init__(self):
        self.extra_sampling = _mapping(self.extra_sampling, "extra_sampling")
        self.vllm_engine_kwargs = _mapping(self.vllm_engine_kwargs, "vllm_engine_kwargs")


def _mapping(value: dict | str | None, key: str) -> dict | None:
    """A mapping key's value: a dict from a recipe, or the JSON object a command-line flag gives as text."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise StageInputError(f"{key} must be a JSON object, got {value!r} ({error.msg}).") from error
    if value is not None and not isinstance(value, dict):
        raise StageInputError(f"{key} must be a mapping of option names to values, got {value!r}.")
    return value
