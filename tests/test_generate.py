"""Generation with a budget: the hard stop (transformers and vLLM), `cotx-rl generate` and its Python API."""

import json
import re
from pathlib import Path

import pytest
import torch
from scripted_students import force, scripted

from cotx_rl import cli
from cotx_rl import generate as generate_stage
from cotx_rl.budget import count_thinking_tokens, parse_completion, render_completion
from cotx_rl.chat import template_opens_thought
from cotx_rl.config import RunArguments
from cotx_rl.generate import BudgetedGenerator, GenerateArguments, read_questions
from cotx_rl.generation import ForceCloseThought, ThoughtLimit, VLLMGenerator, hard_stop_limit, summarize
from cotx_rl.io import StageInputError, read_rows
from cotx_rl.tiny import build_tiny_student, build_tiny_tokenizer

QUESTIONS = ["Compute 2 + 3.", "Compute 7 * 4 - 1.", "Compute 9 - 2 + 8.", "Compute 5 + 5 + 5.", "Compute 8 - 3.",
             "Compute 6 * 2 + 4."]  # fmt: skip


def ids_of(tokenizer, *tokens):
    return tokenizer.convert_tokens_to_ids(list(tokens))


def words_only(tokenizer):
    """A mask of the space-led word tokens (`▁so`): text made of them tokenizes back to the same tokens, so that
    counting on the decoded text and on the ids agree."""
    mask = torch.zeros(len(tokenizer), dtype=torch.bool)
    for token, index in tokenizer.get_vocab().items():
        mask[index] = token.startswith("▁") and token[1:].isalpha()
    return mask


def never_closes(tokenizer, head=()):
    """A student that writes `head` (e.g. a `<budget>` declaration), opens its thought and never closes it: inside the
    thought it writes the word its random weights like best (never `</think>`, nor the end of sequence). After a
    forced close it answers as its weights like, without reopening a thought."""
    start, end, b_start, b_end = ids_of(tokenizer, "<think>", "</think>", "<budget>", "</budget>")
    opening = [*ids_of(tokenizer, *head), start]
    words = words_only(tokenizer)

    def script(generated, logits):
        if len(generated) < len(opening) and generated == opening[: len(generated)]:
            force(logits, opening[len(generated)])
        elif end not in generated:
            logits[~words] = float("-inf")
        else:
            logits[[start, end, b_start, b_end, tokenizer.pad_token_id]] = float("-inf")

    return script


def closes_after(tokenizer, thinking_tokens: int):
    """A student that thinks `thinking_tokens` tokens, closes the thought itself, answers `\\boxed{5}` and stops."""
    completion = render_completion(" ".join(["so"] * (thinking_tokens - 2)), "\\boxed{5}")
    target = [*tokenizer(completion, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]

    def script(generated, logits):
        force(logits, target[min(len(generated), len(target) - 1)])

    return script


@pytest.fixture
def random_student(tiny_tokenizer):
    return build_tiny_student(tiny_tokenizer, seed=0, hidden_size=32, num_layers=1, num_heads=2,
                              initializer_range=0.5)  # fmt: skip


def test_max_mode_hard_stop_holds_a_random_student_to_16_thinking_tokens(random_student, tiny_tokenizer):
    model = scripted(random_student, tiny_tokenizer, never_closes(tiny_tokenizer))
    generator = BudgetedGenerator(model, tiny_tokenizer, max_new_tokens=64, answer_tokens=4, batch_size=4)
    rows = generator.generate(QUESTIONS, "max", 16)
    for row in rows:
        counted = count_thinking_tokens(row["completion"], tiny_tokenizer)
        assert counted is not None and counted <= 16, row["completion"]
        assert row["thinking_tokens"] == counted
        # The student never closes its thought: every row was stopped, and its answer capped at 4 tokens (+ EOS).
        assert row["hard_stopped"] and row["finish_reason"] in ("answer_cap", "stop")
    summary = summarize(rows)
    assert summary["num_hard_stopped"] == len(QUESTIONS) and summary["hard_stop_rate"] == 1.0


def test_without_the_hard_stop_the_same_student_runs_on(random_student, tiny_tokenizer):
    model = scripted(random_student, tiny_tokenizer, never_closes(tiny_tokenizer))
    generator = BudgetedGenerator(model, tiny_tokenizer, max_new_tokens=40, answer_tokens=4)
    rows = generator.generate(QUESTIONS[:2], "max", 16, hard_stop=False)
    assert [row["thinking_tokens"] for row in rows] == [39, 39]  # everything after <think>, to max_new_tokens
    assert not any(row["hard_stopped"] for row in rows) and {row["finish_reason"] for row in rows} == {"length"}
    assert summarize(rows)["hard_stop_rate"] == 0.0


def test_exact_mode_stops_at_budget_plus_tolerance(random_student, tiny_tokenizer):
    model = scripted(random_student, tiny_tokenizer, never_closes(tiny_tokenizer))
    generator = BudgetedGenerator(model, tiny_tokenizer, max_new_tokens=64, answer_tokens=4, hard_stop_tolerance=0.1)
    assert generator.limit("exact", 20) is None  # off by default in exact mode
    rows = generator.generate(QUESTIONS[:3], "exact", 20, hard_stop=True)
    assert [count_thinking_tokens(r["completion"], tiny_tokenizer) for r in rows] == [22, 22, 22]
    assert all(r["hard_stopped"] for r in rows)


def test_auto_mode_stops_at_the_declared_budget_plus_tolerance(random_student, tiny_tokenizer):
    # Declares <budget>8</budget>, then never closes its thought: stopped at 8 + ceil(0.1 * 8) = 9.
    script = never_closes(tiny_tokenizer, head=("<budget>", "8", "</budget>", "\n"))
    generator = BudgetedGenerator(scripted(random_student, tiny_tokenizer, script), tiny_tokenizer,
                                  max_new_tokens=64, answer_tokens=4, max_budget_tokens=40)  # fmt: skip
    rows = generator.generate(QUESTIONS[:3], "auto", hard_stop=True)
    for row in rows:
        assert row["declared_budget_tokens"] == 8, row["completion"]
        assert count_thinking_tokens(row["completion"], tiny_tokenizer) == 9 and row["hard_stopped"]


def test_auto_mode_without_a_declaration_is_held_to_the_largest_budget(random_student, tiny_tokenizer):
    generator = BudgetedGenerator(scripted(random_student, tiny_tokenizer, never_closes(tiny_tokenizer)),
                                  tiny_tokenizer, max_new_tokens=64, answer_tokens=4, max_budget_tokens=20)  # fmt: skip
    rows = generator.generate(QUESTIONS[:2], "auto", hard_stop=True)
    assert [r["thinking_tokens"] for r in rows] == [22, 22] and all(r["hard_stopped"] for r in rows)
    assert all(r["declared_budget_tokens"] is None for r in rows)


def test_a_student_that_closes_in_time_is_not_counted_as_stopped(random_student, tiny_tokenizer):
    model = scripted(random_student, tiny_tokenizer, closes_after(tiny_tokenizer, 16))
    generator = BudgetedGenerator(model, tiny_tokenizer, max_new_tokens=64, answer_tokens=8)
    rows = generator.generate(QUESTIONS[:3], "max", 16)
    # It closes with its 17th token, exactly when the stop would have forced it.
    assert [r["thinking_tokens"] for r in rows] == [16, 16, 16]
    assert [r["answer"] for r in rows] == ["5", "5", "5"]
    assert not any(r["hard_stopped"] for r in rows) and {r["finish_reason"] for r in rows} == {"stop"}


@pytest.fixture
def opening_tokenizer():
    """The embedded tokenizer with a template whose generation prompt opens the thought (as R1-Distill's does)."""
    tokenizer = build_tiny_tokenizer()
    tokenizer.chat_template = tokenizer.chat_template.replace("<|assistant|>\n{% endif %}",
                                                              "<|assistant|>\n<think>\n{% endif %}")  # fmt: skip
    return tokenizer


def test_a_thought_opened_by_the_template_counts_from_the_prompt(opening_tokenizer, tiny_tokenizer):
    assert template_opens_thought(opening_tokenizer) and not template_opens_thought(tiny_tokenizer)
    start, end = ids_of(opening_tokenizer, "<think>", "</think>")
    words = words_only(opening_tokenizer)

    def script(generated, logits):  # already inside the thought: never closes it, never ends
        if end not in generated:
            logits[~words] = float("-inf")
        else:
            logits[[start, end]] = float("-inf")

    model = build_tiny_student(opening_tokenizer, seed=1, hidden_size=32, num_layers=1, num_heads=2)
    generator = BudgetedGenerator(scripted(model, opening_tokenizer, script), opening_tokenizer, max_new_tokens=48,
                                  answer_tokens=3)  # fmt: skip
    rows = generator.generate(QUESTIONS[:3], "max", 12)
    for row in rows:
        # The completion starts with the prompt's `<think>\n` again; the newline is one of the 12 thinking tokens.
        assert row["completion"].startswith("<think>\n")
        assert count_thinking_tokens(row["completion"], opening_tokenizer) == 12 and row["hard_stopped"]


def test_processor_reads_the_declared_budget_from_the_ids():
    # ids: 1 <think>, 2 </think>, 3 <budget>, 4 </budget>, 7 a digit "8", 5 a word; prompt of width 2.
    processor = ForceCloseThought(1, 2, None, prompt_length=2, budget_ids=(3, 4), declared_tolerance=0.25,
                                  decode=lambda ids: "".join("8" if i == 7 else "?" for i in ids))  # fmt: skip
    declared = [9, 9, 3, 7, 4, 1] + [5] * 10  # declares 8: limit 8 + ceil(2) = 10
    undeclared = [9, 9, 1] + [5] * 13
    scores = processor(torch.tensor([declared, undeclared]), torch.zeros(2, 10))
    assert scores[0].argmax() == 2 and scores[0][5] == float("-inf")  # 10 thinking tokens: close now
    assert torch.equal(scores[1], torch.zeros(10))  # no declaration and no fallback: no limit
    assert processor.hard_stopped.tolist() == [True, False]


def test_hard_stop_limit_rounds_up_a_share():
    assert hard_stop_limit(8, 0.1) == 9 and hard_stop_limit(30, 0.1) == 33 and hard_stop_limit(96, 0.0) == 96
    assert ThoughtLimit.for_mode("max", 48, 0.1, 16) == ThoughtLimit(48, 16)
    assert ThoughtLimit.for_mode("exact", 48, 0.1, 16) == ThoughtLimit(53, 16)
    assert ThoughtLimit.for_mode("auto", None, 0.1, 16, max_budget_tokens=96) == ThoughtLimit(106, 16, 0.1)


# --- vLLM: the calls it is sent, with a fake engine (`fake_vllm`, in conftest.py) -----------------------------------


def scripted_ids(tokenizer, head=(), close_after=None):
    """A next-token script over completion ids: `\\n`, then `head`, then `<think>` and `so` tokens, closing after
    `close_after` thinking tokens (never when None), then `\\boxed{5}` and the end of sequence."""
    start, end, newline, word = ids_of(tokenizer, "<think>", "</think>", "\n", "\u2581so")
    answer = [*tokenizer("\\boxed{5}", add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
    opening = [newline, *ids_of(tokenizer, *head), start]

    def next_token(completion):
        if len(completion) < len(opening):
            return opening[len(completion)]
        if end in completion:
            return answer[min(len(completion) - completion.index(end) - 1, len(answer) - 1)]
        thinking = len(completion) - completion.index(start) - 1
        return end if close_after is not None and thinking == close_after else word

    return next_token


def test_vllm_max_mode_caps_the_thought_and_the_answer(fake_vllm, tiny_tokenizer):
    fake_vllm.script = scripted_ids(tiny_tokenizer)
    generator = VLLMGenerator("student")
    results = generator.generate(tiny_tokenizer, ["Compute 2 + 3.", "Compute 4 + 4."], 200, ThoughtLimit(16, 3))
    start, end = ids_of(tiny_tokenizer, "<think>", "</think>")
    for result in results:
        assert count_thinking_tokens(result.text, tiny_tokenizer, result.token_ids) == 16
        assert result.hard_stopped and result.finish_reason == "answer_cap"
        assert len(result.token_ids) - result.token_ids.index(end) - 1 == 3
    thought, answer = fake_vllm.calls
    prompt_ids = tiny_tokenizer(tiny_tokenizer.apply_chat_template(
        [{"role": "user", "content": "Compute 2 + 3."}], tokenize=False, add_generation_prompt=True
    ), add_special_tokens=False)["input_ids"]  # fmt: skip
    # The thought call: the prompt as token ids, room for the limit, a little before <think>, and the close.
    assert thought[0][0] == prompt_ids
    assert [(p.max_tokens, p.stop_token_ids, p.temperature) for _, p in thought] == [(26, [end], 0.0)] * 2
    # The answer call continues the cut thought, closed with </think>, for answer_tokens at most.
    cut = prompt_ids + results[0].token_ids[: results[0].token_ids.index(end) + 1]
    assert answer[0][0] == cut and [p.max_tokens for _, p in answer] == [3, 3]


def test_vllm_auto_mode_reads_the_declaration_first(fake_vllm, tiny_tokenizer):
    fake_vllm.script = scripted_ids(tiny_tokenizer, head=("<budget>", "8", "</budget>", "\n"))
    results = VLLMGenerator("student").generate(tiny_tokenizer, ["Compute 2 + 3."], 200, ThoughtLimit(40, 3, 0.1))
    (result,) = results
    assert count_thinking_tokens(result.text, tiny_tokenizer, result.token_ids) == 9 and result.hard_stopped
    assert result.text.startswith("<budget>8</budget>\n<think>")
    declaration = fake_vllm.calls[0]
    assert [(p.max_tokens, p.stop_token_ids) for _, p in declaration] == [(16, ids_of(tiny_tokenizer, "</budget>"))]


def test_vllm_a_thought_closed_in_time_is_left_alone(fake_vllm, tiny_tokenizer):
    fake_vllm.script = scripted_ids(tiny_tokenizer, close_after=10)
    (result,) = VLLMGenerator("student").generate(tiny_tokenizer, ["Compute 2 + 3."], 200, ThoughtLimit(16, 8))
    assert count_thinking_tokens(result.text, tiny_tokenizer, result.token_ids) == 10
    assert not result.hard_stopped and result.finish_reason == "stop" and result.text.endswith("\\boxed{5}")
    assert len(fake_vllm.calls) == 2  # the thought, then the answer


def test_vllm_prompts_carry_one_bos(fake_vllm, shared_data):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(shared_data / "real" / "tokenizers" / "deepseek-r1-distill-qwen")
    fake_vllm.eos_token_id = tokenizer.eos_token_id
    fake_vllm.completion_start = tokenizer.convert_tokens_to_ids("<\uff5cAssistant\uff5c>")
    fake_vllm.script = lambda completion: tokenizer.eos_token_id
    VLLMGenerator("student").generate(tokenizer, ["What is 2 + 3?"], 32, ThoughtLimit(16, 8))
    ((prompt_ids, _),) = fake_vllm.calls[0]
    # The chat template writes the BOS; tokenizing the rendered prompt with special tokens would add a second one.
    assert prompt_ids.count(tokenizer.bos_token_id) == 1


def test_budgeted_generator_uses_vllm_when_asked(fake_vllm, tiny_tokenizer, tmp_path, monkeypatch):
    import cotx_rl.generation as generation

    tiny_tokenizer.save_pretrained(tmp_path / "student")
    monkeypatch.setattr(generation, "vllm_usable", lambda: True)
    fake_vllm.script = scripted_ids(tiny_tokenizer)
    generator = BudgetedGenerator(str(tmp_path / "student"), engine="vllm", answer_tokens=2, max_new_tokens=100)
    rows = generator.generate(["Compute 2 + 3."], "max", 16)
    assert rows[0]["thinking_tokens"] == 16 and rows[0]["hard_stopped"]


# --- the stage: input, output, errors ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved_student(tmp_path_factory):
    tokenizer = build_tiny_tokenizer()
    folder = tmp_path_factory.mktemp("student")
    build_tiny_student(tokenizer, seed=0, hidden_size=32, num_layers=1, num_heads=2).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def test_cli_writes_one_row_per_question_with_inputs_passed_through(saved_student, tmp_path):
    source = tmp_path / "questions.jsonl"
    source.write_text(
        "\n".join(json.dumps({"question": q, "id": i, "answer": "5"}) for i, q in enumerate(QUESTIONS[:3]))
    )
    output = tmp_path / "out" / "answers.jsonl"
    argv = ["generate", "--model", saved_student, "--input", str(source), "--output", str(output),
            "--budget_mode", "max", "--budget_tokens", "16", "--max_new_tokens", "24", "--engine", "transformers"]  # fmt: skip
    assert cli.main(argv) == 0
    rows = read_rows(output)
    assert [r["question"] for r in rows] == QUESTIONS[:3] and [r["id"] for r in rows] == [0, 1, 2]
    expected = {"question", "budget_mode", "budget_tokens", "completion", "answer", "thinking_tokens",
                "declared_budget_tokens", "hard_stopped", "completion_tokens", "finish_reason"}  # fmt: skip
    for row in rows:
        assert expected <= set(row) and row["budget_mode"] == "max" and row["budget_tokens"] == 16
        assert row["input_answer"] == "5"  # the input's `answer` (a gold) is kept apart from the extracted one
        assert row["thinking_tokens"] <= 16


def test_plain_text_input_and_summary(saved_student, tmp_path):
    source = tmp_path / "questions.txt"
    source.write_text("Compute 2 + 3.\n\nCompute 4 * 2.\n")
    args = GenerateArguments(model=saved_student, input=str(source), output=str(tmp_path / "a.jsonl"),
                             budget_mode="auto", max_new_tokens=16, engine="transformers")  # fmt: skip
    summary = generate_stage.main(args, RunArguments(budget_grid=[8, 16]))
    rows = read_rows(tmp_path / "a.jsonl")
    assert [r["question"] for r in rows] == ["Compute 2 + 3.", "Compute 4 * 2."]
    assert summary["num_rows"] == 2 and summary["hard_stop"] is False
    assert summary["num_hard_stopped"] == sum(r["hard_stopped"] for r in rows)


@pytest.mark.parametrize(
    "name,text,message",
    [
        ("q.jsonl", '{"question": "a"}\n{"question": "b"\n{"question": "c"}\n', "line 2 is not JSON"),
        ("q.jsonl", '{"question": "a"}\n\n{"prompt": "b"}\n', r"line 3: lacks column\(s\) \['question'\]"),
        ("q.jsonl", '{"question": "a"}\n["b"]\n', "line 2 holds a JSON list"),
        ("q.jsonl", '{"question": ""}\n', "line 1: question is empty"),
        ("q.jsonl", '{"question": 7}\n', "line 1: question is a number"),
        ("q.txt", "\n\n", "has no questions"),
        ("q.csv", "prompt\nhello\n", r"row 1: lacks column\(s\) \['question'\]"),
    ],
)
def test_bad_input_names_file_and_line(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(StageInputError, match=message) as error:
        read_questions(tmp_path / name)
    assert name in str(error.value)


def test_bad_input_exits_2_with_one_line(saved_student, tmp_path, capsys):
    (tmp_path / "q.jsonl").write_text('{"question": "a"}\n{oops}\n')
    argv = ["generate", "--model", saved_student, "--input", str(tmp_path / "q.jsonl"), "--output",
            str(tmp_path / "a.jsonl"), "--budget_mode", "max", "--budget_tokens", "8"]  # fmt: skip
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "q.jsonl" in err and "line 2" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"budget_mode": "max"}, "positive integer budget_tokens"),
        ({"budget_mode": "exact", "budget_tokens": 0}, "positive integer budget_tokens"),
        ({"budget_mode": "auto", "budget_tokens": 48}, "takes no budget_tokens"),
        ({"budget_mode": "sometimes", "budget_tokens": 48}, "sometimes"),
        ({"budget_mode": "max", "budget_tokens": 48, "engine": "jax"}, "jax"),
        ({"budget_mode": "max", "budget_tokens": 48, "hard_stop_tolerance": -0.1}, "hard_stop_tolerance"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(StageInputError, match=message):
        GenerateArguments(model="m", input="q.txt", output="a.jsonl", **kwargs)


def test_unwritable_output_fails_before_the_model_loads(saved_student, tmp_path, monkeypatch):
    (tmp_path / "q.txt").write_text("Compute 2 + 3.\n")
    (tmp_path / "taken").write_text("a file, not a folder\n")

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded before the output was checked")

    monkeypatch.setattr(generate_stage, "BudgetedGenerator", no_loading)
    args = GenerateArguments(model=saved_student, input=str(tmp_path / "q.txt"),
                             output=str(tmp_path / "taken" / "a.jsonl"), budget_mode="max", budget_tokens=8)  # fmt: skip
    with pytest.raises(StageInputError, match="taken' is a file where a folder should be"):
        generate_stage.main(args)


# --- the README's client-side budget, against a real OpenAI-compatible server ------------------------------------------


def readme_client_code() -> str:
    """The README's client-side budget example (`### Behind a server`), as written."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    (code,) = [block for block in blocks if "def budgeted(" in block]
    return code


@pytest.fixture
def one_word_student(tmp_path) -> str:
    """A student that writes `so` whatever it is asked: a tiny Phi (its output layer has a bias) with the embedded
    tokenizer, the output weights zeroed and the bias on `▁so`. It never closes a thought nor declares a budget, and
    `so so so` tokenizes back to one token per word, so counts on the server's text are exact."""
    from transformers import GenerationConfig, PhiConfig, PhiForCausalLM

    tokenizer = build_tiny_tokenizer()
    config = PhiConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                       num_attention_heads=2, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                       bos_token_id=tokenizer.bos_token_id)  # fmt: skip
    model = PhiForCausalLM(config)
    with torch.no_grad():
        model.lm_head.weight.zero_()
        model.lm_head.bias.zero_()
        model.lm_head.bias[tokenizer.convert_tokens_to_ids("▁so")] = 10.0
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, do_sample=False
    )
    folder = tmp_path / "student"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def test_readme_client_holds_the_budget_behind_transformers_serve(one_word_student, tmp_path):
    """The README's client runs as written (server address, model name and tokenizer folder replaced) against
    `transformers serve`, with a student that never closes its thought: the client closes it at the limit of each
    mode, to the token, and asks for the answer after it."""
    from servers import transformers_serve

    student = one_word_student
    code = readme_client_code()
    replacements = {
        'BASE_URL = "http://localhost:8000/v1"': "BASE_URL = {url!r}",
        'MODEL = "student"': "MODEL = {student!r}",
        'AutoTokenizer.from_pretrained("outputs/tiny/grpo")': "AutoTokenizer.from_pretrained({student!r})",
    }
    for line in replacements:
        assert code.count(line) == 1, f"the README's client no longer has {line!r}"
    tokenizer = build_tiny_tokenizer()
    with transformers_serve(Path(student), tmp_path / "server.log") as url:
        for line, replacement in replacements.items():
            code = code.replace(line, replacement.format(url=url, student=student))
        namespace: dict = {"__name__": "readme_client"}
        exec(compile(code, "README.md", "exec"), namespace)  # runs its own example call too
        budgeted = namespace["budgeted"]
        # max: N; exact: N + 10% rounded up; auto without a declaration: the largest budget + 10%.
        for mode, budget, limit in (("max", 16, 16), ("exact", 16, 18), ("auto", None, 96 + 10)):
            completion, closed_by_client = budgeted("Compute 7 * 4 - 1.", mode, budget)
            assert closed_by_client and count_thinking_tokens(completion, tokenizer) == limit, (mode, completion)
            thought_and_answer = completion[completion.index("<think>") :]
            parsed = parse_completion(thought_and_answer)
            assert parsed.well_formed and parsed.answer_text.split() == ["so"] * 16, completion  # answer_tokens


def scripted_readme_client(student: str, replies: list[tuple[str, str]]):
    """The README's `budgeted` with its `complete` answering `replies` in order (text, finish reason); returns it
    and the `(prompt, max_tokens)` of every request it made."""
    code = readme_client_code()
    code = code.replace(
        'AutoTokenizer.from_pretrained("outputs/tiny/grpo")', f"AutoTokenizer.from_pretrained({student!r})"
    )
    code = code[: code.index("\nprint(budgeted(")]  # its example call needs a server
    namespace: dict = {"__name__": "readme_client"}
    exec(compile(code, "README.md", "exec"), namespace)
    requests = []

    def complete(prompt, max_tokens):
        requests.append((prompt, max_tokens))
        return replies[len(requests) - 1]

    namespace["complete"] = complete
    return namespace["budgeted"], requests


@pytest.mark.parametrize(
    ("mode", "budget", "replies", "completion", "limits"),
    [
        # The student closes in time and finishes its answer: one request, nothing added.
        ("max", 24, [("\nso so\n</think>\n\\boxed{5}", "stop")], "<think>\nso so\n</think>\n\\boxed{5}", [24]),
        # It closes in time but the request ends inside the answer: the rest of the answer's 16 tokens.
        ("exact", 20, [("\nso\n</think>\n\\boxed{", "length"), ("5}", "stop")], "<think>\nso\n</think>\n\\boxed{5}",
         [22, 16 - 3]),  # `\n`, `\\boxed`, `{`
        # It closes early and writes on: the answer keeps its 16 tokens.
        ("max", 48, [("\nso\n</think>" + " so" * 30, "stop")], "<think>\nso\n</think>" + " so" * 16, [48]),
        # Auto: the declaration sets the limit (24 + 10%), the thought then closes in time.
        ("auto", None, [("<budget>24</budget>\n<think>\nso", "length"), ("\nso\n</think>\n\\boxed{5}", "stop")],
         "<budget>24</budget>\n<think>\nso\n</think>\n\\boxed{5}", [16, 27]),
    ],
)  # fmt: skip
def test_readme_client_keeps_what_the_student_closed_itself(saved_student, mode, budget, replies, completion, limits):
    budgeted, requests = scripted_readme_client(saved_student, replies)
    assert budgeted("Compute 2 + 3.", mode, budget) == (completion, False)
    assert [max_tokens for _, max_tokens in requests] == limits
    assert all(prompt.endswith(("<|assistant|>\n", "<think>", "</think>\n\\boxed{")) for prompt, _ in requests)


def test_plain_text_questions_split_at_newlines_only(tmp_path):
    """A byte order mark is not part of the first question; CRLF ends a line; a form feed, a Unicode line separator or
    NEL pasted into a question does not split it."""
    source = tmp_path / "questions.txt"
    source.write_bytes(
        "\ufeffWhat is 2+2?\r\nA question with a line\u2028separator.\n\nLast\x0cpage\x85NEL.\n".encode()
    )
    rows = read_questions(source)
    assert [row["question"] for row in rows] == ["What is 2+2?", "A question with a line\u2028separator.",
                                                 "Last\x0cpage\x85NEL."]  # fmt: skip
    assert rows.line_numbers == [1, 2, 4]


def test_ndjson_questions_are_read_as_jsonl(tmp_path):
    source = tmp_path / "questions.ndjson"
    source.write_text('{"question": "What is 1+1?", "id": "a"}\n{"question": "What is 2+2?", "id": "b"}\n')
    assert [(row["id"], row["question"]) for row in read_questions(source)] == [
        ("a", "What is 1+1?"),
        ("b", "What is 2+2?"),
    ]
