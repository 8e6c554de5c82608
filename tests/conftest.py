import sys
import types
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared, read-only data directory (`../shared/data` next to the repository)."""
    path = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    assert path.is_dir(), f"shared data directory not found: {path}"
    return path


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """The embedded student's word-level tokenizer (markers are single tokens)."""
    from cotx_rl.tiny import build_tiny_tokenizer

    return build_tiny_tokenizer()


@pytest.fixture(scope="session")
def bpe_tokenizer():
    """A small byte-level BPE tokenizer trained here, without the budget markers (a real model before SFT)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    corpus = [
        "Let me think step by step. First, 12 + 7 = 19. Then 19 - 4 = 15. So the answer is \\boxed{15}.",
        "<think> reasoning </think> The answer is 42. Wait, let me check that again.",
    ] * 50
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    backend.train_from_iterator(corpus, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    tokenizer.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|endoftext|>{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    return tokenizer


class ChatServer:
    """A loopback OpenAI-compatible endpoint (`/v1/models`, `/v1/chat/completions`) that records what it serves.

    It answers arithmetic questions of the embedded domain correctly, in R1 style (`<think>...</think>` then a boxed
    answer), or with a separate `reasoning_content` when `reasoning_field` is set. `statuses` is a queue of error
    statuses to answer first; `delay_seconds` slows every answer down; `max_in_flight` is the most requests it ever
    served at once.
    """

    def __init__(self):
        import threading

        self.lock = threading.Lock()
        self.statuses: list[int] = []
        self.delay_seconds = 0.0
        self.reasoning_field = False
        self.finish_reason = "stop"
        self.requests: list[tuple[float, dict]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.url = ""

    def reply(self, body: dict) -> tuple[int, dict]:
        import time

        from cotx_rl.arithmetic import parse_question

        with self.lock:
            self.requests.append((time.monotonic(), body))
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            status = self.statuses.pop(0) if self.statuses else 200
        try:
            time.sleep(self.delay_seconds)
            if status != 200:
                return status, {"error": {"message": f"scripted failure {status}", "type": "test", "code": status}}
            problem = parse_question(body["messages"][-1]["content"])
            answer = problem.answer if problem else "ok"
            thinking = f"Let me compute it step by step. The result is {answer}."
            message = {"role": "assistant", "content": f"<think>\n{thinking}\n</think>\n\\boxed{{{answer}}}"}
            if self.reasoning_field:
                message = {"role": "assistant", "content": f"\\boxed{{{answer}}}", "reasoning_content": thinking}
            choice = {"index": 0, "message": message, "finish_reason": self.finish_reason}
            return 200, {
                "id": "chatcmpl-test",
                "object": "chat.completion",
                "created": 0,
                "model": body.get("model", ""),
                "choices": [choice],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        finally:
            with self.lock:
                self.in_flight -= 1


@pytest.fixture
def chat_server():
    """A `ChatServer` listening on 127.0.0.1 in a background thread; `chat_server.url` ends in `/v1`."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    state = ChatServer()

    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client was killed mid-request (resume test)
                pass

        def do_GET(self):
            if self.path.rstrip("/") == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": "tiny", "object": "model", "created": 0}]})
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._send(404, {"error": {"message": f"no route {self.path}"}})
                return
            self._send(*state.reply(body))

        def log_message(self, *args):  # keep test output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    yield state
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


class FakeEngine:
    """Stands in for `vllm.LLM`: greedy continuation of token-id prompts by a script over the completion so far,
    honouring `max_tokens`, `stop_token_ids` and the end of sequence; records every call, and the keyword arguments
    the engine was made with (`engine_kwargs`). `chat` renders conversations with `tokenizer`'s chat template, as
    vLLM does, then generates from their token ids; `text` is the completion decoded without special tokens."""

    calls: list = []
    engine_kwargs: dict = {}
    script = None
    tokenizer = None
    eos_token_id = None
    completion_start = None  # the token after which the completion starts (the template's last prompt token)

    def __init__(self, model, dtype="auto", **kwargs):
        self.model = model
        FakeEngine.engine_kwargs = {"model": model, "dtype": dtype, **kwargs}

    def get_tokenizer(self):
        return FakeEngine.tokenizer

    def chat(self, messages, sampling_params, use_tqdm=True, **kwargs):
        tokenizer = FakeEngine.tokenizer
        texts = [tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in messages]
        prompts = [{"prompt_token_ids": tokenizer(text, add_special_tokens=False)["input_ids"]} for text in texts]
        return self.generate(prompts, sampling_params)

    def generate(self, prompts, sampling_params, **kwargs):
        if not isinstance(sampling_params, list):  # vLLM takes one SamplingParams for every prompt, or one each
            sampling_params = [sampling_params] * len(prompts)
        FakeEngine.calls.append([(p["prompt_token_ids"], s) for p, s in zip(prompts, sampling_params)])
        outputs = []
        for prompt, params in zip(prompts, sampling_params):
            ids = list(prompt["prompt_token_ids"])
            offset = len(ids) - ids[::-1].index(FakeEngine.completion_start)
            new, finish, stop = [], "length", None
            for _ in range(params.max_tokens):
                token = FakeEngine.script(ids[offset:] + new)
                new.append(token)
                if token == FakeEngine.eos_token_id:
                    finish = "stop"
                    break
                if token in (params.stop_token_ids or []):
                    finish, stop = "stop", token
                    break
            text = FakeEngine.tokenizer.decode(new, skip_special_tokens=True) if FakeEngine.tokenizer else ""
            choice = types.SimpleNamespace(token_ids=new, finish_reason=finish, stop_reason=stop, text=text)
            outputs.append(types.SimpleNamespace(outputs=[choice]))
        return outputs


class FakeSamplingParams:
    """Stands in for `vllm.SamplingParams`; `kwargs` holds every argument it was given."""

    def __init__(self, temperature=1.0, max_tokens=16, stop_token_ids=None, **kwargs):
        self.temperature, self.max_tokens, self.stop_token_ids = temperature, max_tokens, stop_token_ids
        self.kwargs = {"temperature": temperature, "max_tokens": max_tokens, **kwargs}


@pytest.fixture
def fake_vllm(monkeypatch, tiny_tokenizer):
    """A fake `vllm` module (`LLM` is [`FakeEngine`]) in `sys.modules`, set up for the embedded tokenizer."""
    module = types.ModuleType("vllm")
    module.LLM, module.SamplingParams = FakeEngine, FakeSamplingParams
    monkeypatch.setitem(sys.modules, "vllm", module)
    FakeEngine.calls, FakeEngine.engine_kwargs = [], {}
    FakeEngine.tokenizer = tiny_tokenizer
    FakeEngine.eos_token_id = tiny_tokenizer.eos_token_id
    FakeEngine.completion_start = tiny_tokenizer.convert_tokens_to_ids("<|assistant|>")
    return FakeEngine


@pytest.fixture(scope="session")
def tiny_training_data(tmp_path_factory) -> Path:
    """A folder with `problems.jsonl` (40 embedded problems) and `examples.jsonl` (their compressed traces)."""
    from cotx_rl import compress
    from cotx_rl.arithmetic import make_problems
    from cotx_rl.compress import CompressArguments
    from cotx_rl.io import write_rows
    from cotx_rl.teachers.procedural import ProceduralTeacher

    folder = tmp_path_factory.mktemp("training_data")
    rows = make_problems(40, "train", seed=1)
    outputs = ProceduralTeacher(min_words=70).generate(rows)
    write_rows(
        folder / "kept.jsonl", [{**r, "reasoning": o.reasoning, "response": o.response} for r, o in zip(rows, outputs)]
    )
    write_rows(folder / "problems.jsonl", rows)
    compress.main(
        CompressArguments(traces_path=str(folder / "kept.jsonl"), output_path=str(folder / "examples.jsonl"))
    )
    return folder
