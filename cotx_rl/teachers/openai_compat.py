"""A teacher behind any OpenAI-compatible chat endpoint: vLLM, SGLang, TGI, `transformers serve`, or a hosted API.

Requests go through the official `openai` SDK, whose client retries what is worth retrying (a timeout, a dropped
connection, and the answers 408, 409, 429 and 5xx) `max_retries` times with exponential backoff (0.5 s doubling up
to 8 s, less up to 25% jitter, or the server's `Retry-After` when it sends one). A request that still fails, or that
the server refuses (400, 404, 422, ...: sending it again would not help), fails its row only: `generate` returns that
trace with its error and the other rows go on. A rejected key (401, 403) fails every request alike, so it stops the
run. At most `max_concurrency` requests are in flight, one per worker thread (threads rather than asyncio so that the
teacher also works inside a running event loop, such as a notebook's).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from cotx_rl.budget import render_thinking
from cotx_rl.io import StageInputError
from cotx_rl.teachers.base import Teacher, TeacherOutput, check_extra_options, check_sampling, split_thinking

logger = logging.getLogger(__name__)

DUMMY_API_KEY = "EMPTY"  # local servers (vLLM, SGLang) accept any key, but the SDK insists on one
CHECK_TIMEOUT_SECONDS = 10.0
RETRIED_STATUSES = (408, 409, 429)  # and every 5xx: the statuses the SDK retries
# A rejected key fails every request alike: it stops the run rather than failing each row in turn.
RUN_STOPPING_STATUSES = (401, 403)
# Request fields the teacher sets from its own recipe keys; `extra_sampling` may not set them too.
OWN_REQUEST_FIELDS = {"model", "messages", "temperature", "top_p", "max_tokens", "max_completion_tokens", "seed", "n",
                      "stream"}  # fmt: skip


def _is_retried(status: int) -> bool:
    return status in RETRIED_STATUSES or status >= 500


class TeacherRequestError(RuntimeError):
    """The endpoint refused a request (a 4xx other than 408/409/429), or kept failing after every retry.

    `status` is the HTTP status of the last answer (None when there was none: a timeout or a lost connection).
    """

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def _server_message(error: Any) -> str:
    """The human part of an error body: `{"error": {"message": ...}}`, `{"message": ...}`, or the raw text."""
    body = getattr(error, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
        if isinstance(inner, str):
            return inner
    response = getattr(error, "response", None)
    text = getattr(response, "text", None)
    return text or str(error)


def _reasoning_field(message: Any) -> str | None:
    """Thinking returned apart from the content: `reasoning_content` (DeepSeek, vLLM) or `reasoning` (newer vLLM)."""
    for key in ("reasoning_content", "reasoning"):
        value = getattr(message, key, None)
        if isinstance(value, str) and value.strip():
            return value
    return None


class OpenAITeacher(Teacher):
    """Traces from an OpenAI-compatible `/chat/completions` endpoint.

    When the server parses the thinking out (`reasoning_content`), that is the reasoning and `content` the response;
    otherwise the content is split at `</think>`. A trace is finished unless `finish_reason` is `"length"` (servers
    say `"stop"`, `"eos"`, `"eos_token"`, ... for a thought that ended on its own). A row whose request fails is
    returned with its error (see the module's docstring).

    Args:
        model (`str`): model id the endpoint serves.
        base_url (`str`, *optional*): endpoint such as `http://localhost:8000/v1` (default: `$OPENAI_BASE_URL`, else
            the SDK's default, OpenAI's API).
        api_key (`str`, *optional*): key (default: `$OPENAI_API_KEY`, else a dummy key for local servers).
        system_prompt (`str`, *optional*): system message sent before each problem.
        temperature (`float`): sampling temperature; 0 is greedy.
        top_p (`float`): nucleus sampling threshold.
        max_new_tokens (`int`): `max_tokens` of each request.
        max_concurrency (`int`): requests in flight at once.
        max_retries (`int`): retries of a request on 429, 5xx and dropped connections.
        request_timeout (`float`): seconds before one attempt is abandoned.
        seed (`int`): sent with each request, for servers that seed sampling per request; sample `k` of a problem
            (the row's `sample`) is sent `seed + k`, so that a seeded server draws different samples.
        extra_sampling (`dict`, *optional*): more fields of the request body (`top_k`, `min_p`, `repetition_penalty`,
            ...), sent as they are.
    """

    name = "openai"

    def __init__(
        self,
        model: str | None,
        base_url: str | None = None,
        api_key: str | None = None,
        system_prompt: str | None = None,
        temperature: float = 0.6,
        top_p: float = 0.95,
        max_new_tokens: int = 4096,
        max_concurrency: int = 16,
        max_retries: int = 5,
        request_timeout: float = 600.0,
        seed: int = 0,
        extra_sampling: dict | None = None,
    ):
        import openai

        self.model_name = model
        self.system_prompt = system_prompt
        self.temperature, self.top_p, self.max_new_tokens, self.seed = temperature, top_p, max_new_tokens, seed
        self.max_concurrency, self.max_retries, self.request_timeout = max_concurrency, max_retries, request_timeout
        self.extra_sampling = dict(extra_sampling or {})
        self.client = openai.OpenAI(
            base_url=base_url or os.environ.get("OPENAI_BASE_URL") or None,
            api_key=api_key or os.environ.get("OPENAI_API_KEY") or DUMMY_API_KEY,
            max_retries=max_retries,
            timeout=request_timeout,
        )
        self.base_url = str(self.client.base_url).rstrip("/")

    @property
    def label(self) -> str:
        return f"{self.name}:{self.model_name}"

    def check(self) -> None:
        """Fail fast on a missing model id, bad settings, an endpoint that does not answer, or a rejected key."""
        import openai

        if not self.model_name:
            raise StageInputError("The openai teacher needs teacher_model: the model id that the endpoint serves.")
        check_sampling(self.temperature, self.top_p, self.max_new_tokens)
        if self.max_concurrency <= 0 or self.max_retries < 0:
            raise StageInputError(
                f"max_concurrency must be positive and max_retries >= 0, got {self.max_concurrency} and "
                f"{self.max_retries}."
            )
        check_extra_options(self.extra_sampling, OWN_REQUEST_FIELDS, "extra_sampling", self.name)
        url = f"{self.base_url}/models"
        probe = self.client.with_options(max_retries=0, timeout=min(self.request_timeout, CHECK_TIMEOUT_SECONDS))
        try:
            served = [model.id for model in probe.models.list().data]
        except openai.APIConnectionError as error:  # refused, unresolvable or timed out
            reason = error.__cause__ or error  # the socket's own words: refused, timed out, unknown host
            raise StageInputError(f"The openai teacher's endpoint {url} is unreachable: {reason}") from error
        except (openai.AuthenticationError, openai.PermissionDeniedError) as error:
            raise StageInputError(
                f"The openai teacher's endpoint {url} rejected the API key ({error.status_code}): "
                f"{_server_message(error)}"
            ) from error
        except openai.APIStatusError as error:  # some servers do not list models; the endpoint is up all the same
            logger.info("%s answered %s; not checking the model id.", url, error.status_code)
            return
        if served and self.model_name not in served:
            logger.warning("%s does not list model %r (it lists %s).", url, self.model_name, served[:10])

    def _chat(self, messages: list[dict], seed: int | None = None) -> tuple[str | None, str, bool]:
        """(separate reasoning or None, content, finished) of one chat request; a `TeacherRequestError` when the
        endpoint refused it or kept failing after the SDK's retries."""
        import openai

        try:
            completion = self.client.chat.completions.create(
                model=self.model_name,
                messages=messages,
                temperature=self.temperature,
                top_p=self.top_p,
                max_tokens=self.max_new_tokens,
                seed=self.seed if seed is None else seed,
                extra_body=self.extra_sampling or None,
            )
        except openai.APIStatusError as error:
            retried = f" after {self.max_retries} retries" if _is_retried(error.status_code) else ""
            raise TeacherRequestError(
                f"The openai teacher's endpoint {self.base_url} answered {error.status_code}{retried} to a request "
                f"for model {self.model_name!r}: {_server_message(error)}",
                error.status_code,
            ) from error
        except openai.APIConnectionError as error:  # timeouts too
            reason = error.__cause__ or error
            raise TeacherRequestError(
                f"The openai teacher lost the endpoint {self.base_url} after {self.max_retries} retries: "
                f"{type(error).__name__}: {reason}"
            ) from error
        except openai.APIError as error:  # an answer the SDK could not read
            raise TeacherRequestError(
                f"The openai teacher's endpoint {self.base_url} answered unreadably: {error}"
            ) from error
        if not completion.choices:
            raise TeacherRequestError(f"The openai teacher's endpoint {self.base_url} answered without a choice.")
        choice = completion.choices[0]
        return _reasoning_field(choice.message), choice.message.content or "", choice.finish_reason != "length"

    def _map(self, function: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        """`function` over `items` with at most `max_concurrency` calls at once; the first error stops the rest."""
        if not items:
            return []
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(items))) as pool:
            futures = [pool.submit(function, item) for item in items]
            try:
                return [future.result() for future in futures]
            except BaseException:
                for future in futures:
                    future.cancel()
                raise

    def _messages(self, user_text: str, system_prompt: str | None) -> list[dict]:
        messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
        return [*messages, {"role": "user", "content": user_text}]

    def _trace(self, row: dict) -> TeacherOutput:
        """The trace of one problem row, or the row's error when its request failed (a rejected key stops the run)."""
        try:
            reasoning, content, finished = self._chat(
                self._messages(row["question"], self.system_prompt), self.seed + (row.get("sample") or 0)
            )
        except TeacherRequestError as error:
            if error.status in RUN_STOPPING_STATUSES:
                raise
            sample = f" sample {row['sample']}" if row.get("sample") is not None else ""
            logger.warning("Trace of %r%s failed; recorded, a rerun retries it: %s", row.get("id"), sample, error)
            return TeacherOutput("", "", False, error=str(error))
        if reasoning is None:
            reasoning, content = split_thinking(content)
        return TeacherOutput(reasoning.strip(), content.strip(), finished)

    def generate(self, rows: list[dict]) -> list[TeacherOutput]:
        return self._map(self._trace, rows)

    def _completion(self, prompt: str) -> str | None:
        """The reply to one free-form prompt, or None when its request failed (a rejected key stops the run)."""
        try:
            reasoning, content, _ = self._chat(self._messages(prompt, None))
        except TeacherRequestError as error:
            if error.status in RUN_STOPPING_STATUSES:
                raise
            logger.warning("A rewrite request failed; a rerun asks again: %s", error)
            return None
        # Put separately returned thinking back in front, so callers split every backend's text the same way.
        return content if reasoning is None else f"{render_thinking(reasoning.strip())}\n{content}"

    def complete(self, prompts: list[str]) -> list[str | None]:
        return self._map(self._completion, prompts)

    def close(self) -> None:
        self.client.close()
