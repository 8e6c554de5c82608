"""Teacher backends: building them from the recipe, failing fast on bad settings, and what each one returns."""

import sys
import time

import pytest
from servers import free_port

from cotx_rl.io import StageInputError
from cotx_rl.teachers import TeacherArguments, build_teacher
from cotx_rl.teachers.base import looks_like_local_path

QUESTIONS = ["Compute 12 + 7 - 4.", "Compute 30 - 9.", "Compute 5 + 5 + 5."]
ANSWERS = ["15", "21", "15"]


def rows_of(questions):
    return [{"id": f"p{i}", "question": q} for i, q in enumerate(questions)]


# --- building and checking --------------------------------------------------------------------------------------------


def test_build_teacher_unknown_name_lists_choices():
    with pytest.raises(StageInputError, match="'gpt'.*procedural, transformers, openai, vllm"):
        build_teacher(TeacherArguments(teacher="gpt"))


def test_build_teacher_procedural_uses_recipe_settings():
    teacher = build_teacher(TeacherArguments(teacher="procedural", seed=3, min_words=50, wrong_turn_rate=0.0))
    assert (teacher.seed, teacher.min_words, teacher.wrong_turn_rate) == (3, 50, 0.0)
    teacher.check()  # nothing to check, nothing raised
    (output,) = teacher.generate([{"id": "a", "question": "Compute 12 + 7 - 4."}])
    assert output.finished and output.response == "\\boxed{15}" and len(output.reasoning.split()) >= 50
    assert teacher.label == "procedural"


def test_local_path_detection(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    assert looks_like_local_path("/abs/model") and looks_like_local_path("./m") and looks_like_local_path("~/m")
    assert looks_like_local_path("../m") and looks_like_local_path("models/missing")
    assert not looks_like_local_path("Qwen/Qwen3-8B") and not looks_like_local_path("gpt2")


@pytest.mark.parametrize("backend", ["transformers", "openai"])
def test_missing_teacher_model_fails_check(backend, chat_server):
    teacher = build_teacher(TeacherArguments(teacher=backend, base_url=chat_server.url))
    with pytest.raises(StageInputError, match=f"{backend} teacher needs teacher_model"):
        teacher.check()


def test_model_path_that_does_not_exist_fails_check(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    (tmp_path / "weights.bin").write_text("x")
    for name, message in [
        (str(tmp_path / "absent"), "does not exist"),
        ("models/absent", "does not exist"),
        ("./weights.bin", "is not a folder"),
    ]:
        teacher = build_teacher(TeacherArguments(teacher="transformers", teacher_model=name))
        with pytest.raises(StageInputError, match=message) as info:
            teacher.check()
        assert name in str(info.value)
    # A hub id is left to from_pretrained: check() does not claim it is missing.
    build_teacher(TeacherArguments(teacher="transformers", teacher_model="org/some-model")).check()


def test_bad_sampling_settings_fail_check(tiny_model_dir):
    for settings, word in [({"temperature": -1.0}, "temperature"), ({"top_p": 0.0}, "top_p")]:
        args = TeacherArguments(teacher="transformers", teacher_model=str(tiny_model_dir), **settings)
        with pytest.raises(StageInputError, match=word):
            build_teacher(args).check()
    args = TeacherArguments(teacher="transformers", teacher_model=str(tiny_model_dir), teacher_dtype="float99")
    with pytest.raises(StageInputError, match="float99"):
        build_teacher(args).check()


# --- transformers -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer):
    """A ~30k-parameter random Llama and the word-level tokenizer (with a chat template), saved as a model folder.

    Weights drawn wide (initializer_range 1) so that greedy continuations depend on the prompt; at the usual 0.02 the
    untrained model repeats the last prompt token.
    """
    from cotx_rl.tiny import build_tiny_student

    path = tmp_path_factory.mktemp("tiny-teacher")
    model = build_tiny_student(tiny_tokenizer, hidden_size=32, num_layers=1, num_heads=2, initializer_range=1.0)
    model.save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def eos_model_dir(tmp_path_factory, tiny_tokenizer):
    """A tiny model that always ends at once: zero hidden states give equal logits, and the two tokens before the
    end-of-sequence token in the vocabulary are suppressed, so greedy decoding picks `<|end|>`."""
    from cotx_rl.tiny import build_tiny_student

    assert tiny_tokenizer.eos_token_id == 2
    model = build_tiny_student(tiny_tokenizer, hidden_size=32, num_layers=1, num_heads=2)
    model.model.norm.weight.data.zero_()
    model.generation_config.suppress_tokens = [0, 1]
    path = tmp_path_factory.mktemp("eos-teacher")
    model.save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


def transformers_teacher(path, **settings):
    args = TeacherArguments(teacher="transformers", teacher_model=str(path), **settings)
    teacher = build_teacher(args)
    teacher.check()
    return teacher


def test_transformers_prompt_uses_chat_template_and_system_prompt(tiny_model_dir):
    teacher = transformers_teacher(tiny_model_dir, system_prompt="Let me think.", max_new_tokens=2, temperature=0.0)
    expected = "<|system|>\nLet me think.<|end|>\n<|user|>\nCompute 30 - 9.<|end|>\n<|assistant|>\n"
    assert teacher.prompt_text("Compute 30 - 9.", "Let me think.") == expected

    seen = []
    generate = teacher.model.generate

    def spy(**kwargs):
        seen.extend(kwargs["input_ids"].tolist())
        return generate(**kwargs)

    teacher.model.generate = spy
    teacher.generate(rows_of(["Compute 30 - 9."]))
    assert teacher.tokenizer.decode(seen[0], skip_special_tokens=False) == expected


def test_transformers_without_chat_template_sends_the_question(tmp_path, tiny_tokenizer, tiny_model_dir):
    import copy
    import shutil

    shutil.copytree(tiny_model_dir, tmp_path / "plain", dirs_exist_ok=True)
    for template in (tmp_path / "plain").glob("chat_template*"):
        template.unlink()
    tokenizer = copy.deepcopy(tiny_tokenizer)
    tokenizer.chat_template = None
    tokenizer.save_pretrained(tmp_path / "plain")
    teacher = transformers_teacher(tmp_path / "plain")
    assert not teacher.tokenizer.chat_template
    assert teacher.prompt_text("Compute 30 - 9.") == "Compute 30 - 9."
    assert teacher.prompt_text("Compute 30 - 9.", "Let me think.") == "Let me think.\n\nCompute 30 - 9."


def test_transformers_batched_generation_hits_length_limit(tiny_model_dir):
    teacher = transformers_teacher(tiny_model_dir, max_new_tokens=4, temperature=0.0, batch_size=2)
    # Questions of different lengths in one batch: left padding must not change a greedy continuation.
    outputs = teacher.generate(rows_of(QUESTIONS))
    assert len(outputs) == 3 and not any(output.finished for output in outputs)
    assert all(output.reasoning for output in outputs)
    # The shorter second question is padded in its batch of two; each continues as it does alone.
    for question, output in zip(QUESTIONS, outputs):
        assert teacher.generate(rows_of([question]))[0] == output
    assert teacher.label == f"transformers:{tiny_model_dir}"
    assert len(teacher.complete(["Rewrite this."])) == 1


def test_transformers_end_of_sequence_marks_finished(eos_model_dir):
    teacher = transformers_teacher(eos_model_dir, max_new_tokens=6, temperature=0.0)
    outputs = teacher.generate(rows_of(QUESTIONS[:2]))
    assert [output.finished for output in outputs] == [True, True]
    assert outputs[0].reasoning == "" and outputs[0].response == ""


def test_transformers_sampling_is_seeded(tiny_model_dir):
    first = transformers_teacher(tiny_model_dir, max_new_tokens=5, temperature=1.0, top_p=1.0, seed=7)
    second = transformers_teacher(tiny_model_dir, max_new_tokens=5, temperature=1.0, top_p=1.0, seed=7)
    assert first.generate(rows_of(QUESTIONS)) == second.generate(rows_of(QUESTIONS))


# --- openai-compatible endpoint ---------------------------------------------------------------------------------------


def openai_teacher(url, **settings):
    settings = {"max_concurrency": 4, "max_retries": 2, "request_timeout": 30.0, **settings}
    teacher = build_teacher(TeacherArguments(teacher="openai", teacher_model="tiny", base_url=url, **settings))
    teacher.check()
    return teacher


def test_openai_splits_think_tags(chat_server):
    teacher = openai_teacher(chat_server.url, system_prompt="Reason first.", temperature=0.0, max_new_tokens=77)
    outputs = teacher.generate(rows_of(QUESTIONS))
    assert [o.response for o in outputs] == [f"\\boxed{{{a}}}" for a in ANSWERS]
    assert outputs[0].reasoning == "Let me compute it step by step. The result is 15." and outputs[0].finished
    body = chat_server.requests[0][1]
    assert body["model"] == "tiny" and body["max_tokens"] == 77 and body["temperature"] == 0.0
    assert body["messages"][0] == {"role": "system", "content": "Reason first."}
    assert teacher.label == "openai:tiny"


def test_openai_uses_reasoning_content_and_length_finish(chat_server):
    chat_server.reasoning_field = True
    chat_server.finish_reason = "length"
    teacher = openai_teacher(chat_server.url)
    (output,) = teacher.generate(rows_of(QUESTIONS[:1]))
    assert output.reasoning == "Let me compute it step by step. The result is 15."
    assert output.response == "\\boxed{15}" and not output.finished
    # complete() puts the separate thinking back in front, so rewrite() finds the answer after </think>.
    (text,) = teacher.complete(["Compute 30 - 9."])
    assert text == "<think>\nLet me compute it step by step. The result is 21.\n</think>\n\\boxed{21}"


def test_openai_retries_rate_limit_with_backoff(chat_server):
    chat_server.statuses = [429]
    teacher = openai_teacher(chat_server.url, max_concurrency=1)
    (output,) = teacher.generate(rows_of(QUESTIONS[:1]))
    assert output.response == "\\boxed{15}"
    times = [t for t, _ in chat_server.requests]
    assert len(times) == 2 and times[1] - times[0] >= 0.3  # the SDK waits 0.5 s less up to 25% jitter


def test_openai_honours_max_retries_with_growing_waits(chat_server):
    chat_server.statuses = [503] * 10
    teacher = openai_teacher(chat_server.url, max_concurrency=1, max_retries=2)
    (output,) = teacher.generate(rows_of(QUESTIONS[:1]))
    assert output.error is not None and (output.reasoning, output.response, output.finished) == ("", "", False)
    assert "503 after 2 retries" in output.error and "scripted failure 503" in output.error
    times = [t for t, _ in chat_server.requests]
    assert len(times) == 3
    assert times[2] - times[1] > times[1] - times[0] >= 0.3


@pytest.mark.parametrize("status", [400, 404, 422])
def test_openai_client_error_fails_its_row_only_without_retries(chat_server, status):
    # Rows go one at a time: the first is answered 429 then 200, the second `status`, the third 503 then 200.
    chat_server.statuses = [429, 200, status, 503]
    teacher = openai_teacher(chat_server.url, max_concurrency=1, max_retries=3)
    outputs = teacher.generate(rows_of(QUESTIONS))
    assert [output.error is None for output in outputs] == [True, False, True]
    assert f"answered {status} to a request for model 'tiny': scripted failure {status}" in outputs[1].error
    assert "retries" not in outputs[1].error
    assert [o.response for o in outputs] == ["\\boxed{15}", "", "\\boxed{15}"]
    assert len(chat_server.requests) == 5  # 2 for the first row, 1 for the refused one, 2 for the last


def test_openai_rejected_key_stops_the_run(chat_server):
    chat_server.statuses = [401]
    teacher = openai_teacher(chat_server.url, max_concurrency=1, max_retries=3)
    with pytest.raises(RuntimeError, match=r"answered 401 to a request for model 'tiny': scripted failure 401"):
        teacher.generate(rows_of(QUESTIONS * 4))
    assert len(chat_server.requests) < 12  # the rows not yet sent are never sent


@pytest.mark.parametrize("finish_reason", ["eos", "stop", "eos_token"])
def test_openai_every_finish_reason_but_length_is_finished(chat_server, finish_reason):
    chat_server.finish_reason = finish_reason
    (output,) = openai_teacher(chat_server.url).generate(rows_of(QUESTIONS[:1]))
    assert output.finished and output.error is None and output.response == "\\boxed{15}"


def test_openai_sends_extra_sampling_and_a_seed_per_sample(chat_server):
    teacher = openai_teacher(chat_server.url, max_concurrency=1, seed=5, extra_sampling={"top_k": 20, "min_p": 0.0})
    rows = [{"id": "p", "question": QUESTIONS[0], "sample": k} for k in range(3)]
    assert len(teacher.generate(rows)) == 3
    bodies = [body for _, body in chat_server.requests]
    assert [(body["top_k"], body["min_p"]) for body in bodies] == [(20, 0.0)] * 3
    assert [body["seed"] for body in bodies] == [5, 6, 7]  # a seeded server draws three different samples


@pytest.mark.parametrize("backend", ["openai", "vllm", "transformers"])
def test_extra_sampling_cannot_set_a_key_of_its_own(backend, chat_server, fake_vllm, tmp_path):
    args = TeacherArguments(
        teacher=backend, teacher_model=str(tmp_path) if backend != "openai" else "tiny", base_url=chat_server.url,
        extra_sampling={"temperature": 1.0, "top_k": 5},
    )  # fmt: skip
    with pytest.raises(StageInputError, match="extra_sampling sets 'temperature'.*own recipe keys"):
        build_teacher(args).check()


def test_openai_bounds_concurrency(chat_server):
    chat_server.delay_seconds = 0.15
    teacher = openai_teacher(chat_server.url, max_concurrency=3)
    started = time.monotonic()
    outputs = teacher.generate(rows_of(QUESTIONS * 4))
    assert len(outputs) == 12 and len(chat_server.requests) == 12
    assert 1 < chat_server.max_in_flight <= 3
    assert time.monotonic() - started >= 4 * 0.15  # 12 requests, 3 at a time


def test_openai_unreachable_endpoint_fails_check():
    url = f"http://127.0.0.1:{free_port()}/v1"
    teacher = build_teacher(TeacherArguments(teacher="openai", teacher_model="tiny", base_url=url))
    started = time.monotonic()
    with pytest.raises(StageInputError, match="unreachable") as info:
        teacher.check()
    assert f"{url}/models" in str(info.value)
    assert time.monotonic() - started < 5  # no retries with backoff before the verdict


def test_openai_base_url_and_key_from_environment(chat_server, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", chat_server.url)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    teacher = build_teacher(TeacherArguments(teacher="openai", teacher_model="tiny"))
    teacher.check()
    assert teacher.base_url == chat_server.url
    assert teacher.generate(rows_of(QUESTIONS[:1]))[0].response == "\\boxed{15}"


# --- vllm -------------------------------------------------------------------------------------------------------------


def test_vllm_without_vllm_installed_says_what_to_do(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` fail even where it is installed
    with pytest.raises(StageInputError, match="pip install vllm.*GPU machine.*transformers or openai"):
        build_teacher(TeacherArguments(teacher="vllm", teacher_model="org/model"))


def test_vllm_backend_maps_engine_outputs(fake_vllm, tiny_tokenizer, tmp_path):
    think, end, word = tiny_tokenizer.convert_tokens_to_ids(["<think>", "</think>", "\u2581so"])
    answer = [*tiny_tokenizer("\\boxed{5}", add_special_tokens=False)["input_ids"], tiny_tokenizer.eos_token_id]
    target = [think, word, word, end, *answer]  # two thinking words, the close, the answer, the end of sequence
    fake_vllm.script = lambda completion: target[min(len(completion), len(target) - 1)]
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    engine = {"tensor_parallel_size": 2, "gpu_memory_utilization": 0.85, "max_model_len": 4096}
    settings = {
        "teacher": "vllm",
        "teacher_model": str(model_dir),
        "system_prompt": "Let me think.",
        "temperature": 0.0,
        "seed": 4,
    }
    args = TeacherArguments(
        **settings, max_new_tokens=32, vllm_engine_kwargs=engine, extra_sampling={"top_k": 20, "min_p": 0.0}
    )
    teacher = build_teacher(args)
    teacher.check()
    outputs = teacher.generate(rows_of(QUESTIONS[:2]))
    assert [(o.reasoning, o.response, o.finished) for o in outputs] == [("so so", "\\boxed{5}", True)] * 2
    assert fake_vllm.engine_kwargs == {"model": str(model_dir), "dtype": "auto", "seed": 4, **engine}
    ((first_prompt, params), _) = fake_vllm.calls[0]
    assert params.kwargs == {"temperature": 0.0, "top_p": 1.0, "max_tokens": 32, "top_k": 20, "min_p": 0.0}
    assert tiny_tokenizer.decode(first_prompt).startswith(
        "<|system|>\nLet me think.<|end|>\n<|user|>\n" + QUESTIONS[0]
    )
    assert teacher.label == f"vllm:{model_dir}"
    # Cut by max_new_tokens: vLLM says "length", the only finish_reason that means unfinished.
    (cut,) = build_teacher(TeacherArguments(**settings, max_new_tokens=3)).generate(rows_of(QUESTIONS[:1]))
    assert (cut.reasoning, cut.finished) == ("so so", False)


def test_vllm_engine_kwargs_cannot_set_a_key_of_its_own(fake_vllm, tmp_path):
    args = TeacherArguments(teacher="vllm", teacher_model=str(tmp_path), vllm_engine_kwargs={"dtype": "float16"})
    with pytest.raises(StageInputError, match="vllm_engine_kwargs sets 'dtype'.*teacher_dtype"):
        build_teacher(args).check()
