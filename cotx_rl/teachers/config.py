"""Teacher settings, shared by the `traces` stage (generation) and the `compress` stage (the `rewrite` compressor)."""

from __future__ import annotations

from dataclasses import dataclass, field

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
        default=5, metadata={"help": "Retries with exponential backoff on 429 and 5xx answers (openai backend)."}
    )
    request_timeout: float = field(default=600.0, metadata={"help": "Seconds before a request is abandoned."})
    seed: int = field(default=0, metadata={"help": "Seed of the teacher's sampling (procedural: of every trace)."})
    min_words: int = field(
        default=0,
        metadata={"help": "Procedural teacher: re-verify until a trace has this many words (teachers overthink)."},
    )
    wrong_turn_rate: float = field(
        default=0.15, metadata={"help": "Procedural teacher: chance per step of a caught and corrected mistake."}
    )
