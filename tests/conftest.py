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
