"""Teacher backends that write reasoning traces: procedural, transformers, openai, vllm."""

from __future__ import annotations

import logging

from cotx_rl.io import StageInputError
from cotx_rl.teachers.base import RewriteRequest, Teacher, TeacherOutput, split_thinking
from cotx_rl.teachers.config import TEACHER_BACKENDS, TeacherArguments

__all__ = ["RewriteRequest", "Teacher", "TeacherArguments", "TeacherOutput", "build_teacher", "split_thinking"]

logger = logging.getLogger(__name__)
# Which backends read each pass-through setting; a recipe that sets one for another backend is told it is ignored.
READERS = {"extra_sampling": ("transformers", "openai", "vllm"), "vllm_engine_kwargs": ("vllm",)}


def build_teacher(args: TeacherArguments) -> Teacher:
    """The teacher that `args.teacher` names, set up from the rest of `args` (nothing is loaded or contacted yet).

    Call `check()` on it to validate the model and the endpoint before any work.
    """
    for key, backends in READERS.items():
        if getattr(args, key) and args.teacher not in backends:
            logger.warning(
                "%s is ignored by the %s teacher (it is read by %s).", key, args.teacher, ", ".join(backends)
            )
    # Backends are imported here, so that choosing one never imports another's heavy dependencies.
    if args.teacher == "procedural":
        from cotx_rl.teachers.procedural import ProceduralTeacher

        return ProceduralTeacher(seed=args.seed, min_words=args.min_words, wrong_turn_rate=args.wrong_turn_rate)
    if args.teacher == "transformers":
        from cotx_rl.teachers.hf import TransformersTeacher

        return TransformersTeacher(
            args.teacher_model,
            system_prompt=args.system_prompt,
            temperature=args.temperature,
            top_p=args.top_p,
            max_new_tokens=args.max_new_tokens,
            batch_size=args.batch_size,
            dtype=args.teacher_dtype,
            seed=args.seed,
            extra_sampling=args.extra_sampling,
        )
    if args.teacher == "openai":
        from cotx_rl.teachers.openai_compat import OpenAITeacher

        return OpenAITeacher(
            args.teacher_model,
            base_url=args.base_url,
            api_key=args.api_key,
            system_prompt=args.system_prompt,
            temperature=args.temperature,
            top_p=args.top_p,
            max_new_tokens=args.max_new_tokens,
            max_concurrency=args.max_concurrency,
            max_retries=args.max_retries,
            request_timeout=args.request_timeout,
            seed=args.seed,
            extra_sampling=args.extra_sampling,
        )
    if args.teacher == "vllm":
        from cotx_rl.teachers.vllm_backend import VLLMTeacher

        return VLLMTeacher(
            args.teacher_model,
            system_prompt=args.system_prompt,
            temperature=args.temperature,
            top_p=args.top_p,
            max_new_tokens=args.max_new_tokens,
            dtype=args.teacher_dtype,
            seed=args.seed,
            extra_sampling=args.extra_sampling,
            engine_kwargs=args.vllm_engine_kwargs,
        )
    raise StageInputError(f"Unknown teacher {args.teacher!r}; choose one of {', '.join(TEACHER_BACKENDS)}.")
