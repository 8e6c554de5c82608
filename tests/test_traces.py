"""The `traces` stage: schema, correctness labels, resuming after a kill, and refusing bad input before any work."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from servers import free_port, transformers_serve

from cotx_rl.arithmetic import make_problems
from cotx_rl.io import StageInputError, write_rows
from cotx_rl.teachers import TeacherArguments
from cotx_rl.traces import TracesArguments, main, make_parser

TRACE_COLUMNS = {"teacher", "reasoning", "response", "teacher_correct", "finish_reason"}
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def problems_path(tmp_path) -> Path:
    rows = make_problems(20, "train")
    for index, row in enumerate(rows):
        row["note"] = f"note-{index}"  # an extra column that must pass through
    return write_rows(tmp_path / "problems.jsonl", rows)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def run(problems_path, output_path, limit=None, **teacher_settings) -> dict:
    script_args = TracesArguments(problems_path=str(problems_path), output_path=str(output_path), limit=limit)
    return main(script_args, TeacherArguments(**teacher_settings))


def test_procedural_traces_schema_and_correctness(problems_path, tmp_path):
    summary = run(problems_path, tmp_path / "traces.jsonl", batch_size=6)
    assert (summary["total"], summary["already_done"], summary["written"], summary["correct"]) == (20, 0, 20, 20)
    problems = read_jsonl(problems_path)
    traces = read_jsonl(tmp_path / "traces.jsonl")
    assert [row["id"] for row in traces] == [row["id"] for row in problems]
    for problem, trace in zip(problems, traces):
        assert set(trace) == set(problem) | TRACE_COLUMNS
        assert {key: trace[key] for key in problem} == problem  # problem columns untouched, extras included
        assert trace["teacher"] == "procedural" and trace["finish_reason"] == "stop"
        assert trace["teacher_correct"] is True
        assert trace["response"] == f"\\boxed{{{problem['answer']}}}" and len(trace["reasoning"].split()) > 10


def test_procedural_traces_are_deterministic(problems_path, tmp_path):
    run(problems_path, tmp_path / "a.jsonl", seed=1, batch_size=7)
    run(problems_path, tmp_path / "b.jsonl", seed=1, batch_size=3)
    run(problems_path, tmp_path / "c.jsonl", seed=2)
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert (tmp_path / "a.jsonl").read_bytes() != (tmp_path / "c.jsonl").read_bytes()


def test_wrong_teacher_answers_are_labelled(tmp_path, chat_server):
    rows = make_problems(4, "train")
    rows[1]["answer"] = "999"  # the endpoint answers the arithmetic correctly, so this gold disagrees
    problems = write_rows(tmp_path / "problems.jsonl", rows)
    output = tmp_path / "traces.jsonl"
    summary = run(problems, output, teacher="openai", teacher_model="tiny", base_url=chat_server.url)
    assert [row["teacher_correct"] for row in read_jsonl(output)] == [True, False, True, True]
    assert summary["correct"] == 3
    assert {row["teacher"] for row in read_jsonl(output)} == {"openai:tiny"}


def test_limit_then_resume_skips_done_ids(problems_path, tmp_path):
    output = tmp_path / "traces.jsonl"
    first = run(problems_path, output, limit=5)
    assert first["written"] == 5
    before = output.read_bytes()
    second = run(problems_path, output)
    assert (second["already_done"], second["written"]) == (5, 15)
    assert output.read_bytes().startswith(before)
    ids = [row["id"] for row in read_jsonl(output)]
    assert len(ids) == len(set(ids)) == 20
    third = run(problems_path, output)
    assert (third["already_done"], third["written"]) == (20, 0)


def test_torn_last_line_is_repaired_and_redone(problems_path, tmp_path):
    output = tmp_path / "traces.jsonl"
    run(problems_path, output, limit=4)
    complete = output.read_bytes()
    with output.open("ab") as handle:
        handle.write(b'{"id": "embedded-arithmetic-train-000004", "question": "Comp')  # a write cut by a kill
    summary = run(problems_path, output, limit=8)
    assert (summary["already_done"], summary["written"]) == (4, 4)
    assert output.read_bytes().startswith(complete)
    ids = [row["id"] for row in read_jsonl(output)]  # every line parses again
    assert ids == [f"embedded-arithmetic-train-{i:06d}" for i in range(8)]


def test_transformers_teacher_through_the_stage(problems_path, tmp_path, tiny_tokenizer):
    from cotx_rl.tiny import build_tiny_student

    model_dir = tmp_path / "model"
    build_tiny_student(tiny_tokenizer, hidden_size=32, num_layers=1, num_heads=2).save_pretrained(model_dir)
    tiny_tokenizer.save_pretrained(model_dir)
    output = tmp_path / "traces.jsonl"
    summary = run(
        problems_path, output, limit=5, teacher="transformers", teacher_model=str(model_dir), max_new_tokens=3,
        temperature=0.0, batch_size=2,
    )  # fmt: skip
    traces = read_jsonl(output)
    assert summary["written"] == summary["truncated"] == 5 and len(traces) == 5
    assert all(row["finish_reason"] == "length" and row["teacher_correct"] is False for row in traces)
    assert {row["teacher"] for row in traces} == {f"transformers:{model_dir}"}


def test_only_the_first_process_writes(problems_path, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert run(problems_path, tmp_path / "traces.jsonl")["written"] == 0
    assert not (tmp_path / "traces.jsonl").exists()
    monkeypatch.setenv("RANK", "0")
    assert run(problems_path, tmp_path / "traces.jsonl")["written"] == 20


def test_parquet_problems_are_read(tmp_path):
    rows = make_problems(3, "test")
    problems = write_rows(tmp_path / "problems.parquet", rows)
    run(problems, tmp_path / "traces.jsonl")
    traces = read_jsonl(tmp_path / "traces.jsonl")
    assert [row["id"] for row in traces] == [row["id"] for row in rows]
    assert all(row["teacher_correct"] for row in traces)


def verify_stats(traces: Path, tmp_path: Path) -> dict:
    from cotx_rl import verify

    return verify.main(verify.VerifyArguments(str(traces), str(tmp_path / "kept.jsonl")))


def test_a_failed_request_is_recorded_and_the_run_goes_on(tmp_path, chat_server, capsys):
    problems = write_rows(tmp_path / "problems.jsonl", make_problems(4, "train"))
    output = tmp_path / "traces.jsonl"
    # One request at a time, in order: the first row is answered 429 then 200, the second 400 (not worth retrying),
    # the third 503 then 200, the fourth 200.
    chat_server.statuses = [429, 200, 400, 503]
    settings = {"teacher": "openai", "teacher_model": "tiny", "base_url": chat_server.url, "max_concurrency": 1,
                "max_retries": 2, "batch_size": 2}  # fmt: skip
    summary = run(problems, output, **settings)
    assert (summary["written"], summary["failed"], summary["correct"]) == (3, 1, 3)
    assert len(chat_server.requests) == 6  # the 400 was sent once
    traces = read_jsonl(output)
    assert [row["finish_reason"] for row in traces] == ["stop", "error", "stop", "stop"]
    failed = traces[1]
    assert "answered 400" in failed["error"] and "scripted failure 400" in failed["error"]
    assert (failed["reasoning"], failed["teacher_correct"]) == ("", False)
    assert all("error" not in row for row in traces[::2])
    assert "failed=1" in capsys.readouterr().err  # the progress bar counts it
    stats = verify_stats(output, tmp_path)
    assert (stats["total"], stats["kept"], stats["dropped"]["failed"]) == (4, 3, 1)
    # A rerun retries the failed row only, and appends its trace.
    again = run(problems, output, **settings)
    assert (again["already_done"], again["retried"], again["written"], again["failed"]) == (3, 1, 1, 0)
    traces = read_jsonl(output)
    assert len(traces) == 5 and traces[4]["id"] == failed["id"] and traces[4]["finish_reason"] == "stop"
    stats = verify_stats(output, tmp_path)
    assert (stats["kept"], stats["dropped"]["failed"], stats["dropped"]["duplicate"]) == (4, 1, 0)
    assert run(problems, output, **settings)["already_done"] == 4


def test_an_eos_finish_reason_is_a_finished_trace(tmp_path, chat_server):
    chat_server.finish_reason = "eos"
    problems = write_rows(tmp_path / "problems.jsonl", make_problems(2, "train"))
    summary = run(
        problems, tmp_path / "traces.jsonl", teacher="openai", teacher_model="tiny", base_url=chat_server.url
    )
    assert (summary["truncated"], summary["correct"]) == (0, 2)
    assert {row["finish_reason"] for row in read_jsonl(tmp_path / "traces.jsonl")} == {"stop"}
    assert verify_stats(tmp_path / "traces.jsonl", tmp_path)["kept"] == 2


def test_num_samples_writes_one_row_per_sample_and_a_resume_fills_the_missing_ones(tmp_path):
    problems = write_rows(tmp_path / "problems.jsonl", make_problems(4, "train"))
    output = tmp_path / "traces.jsonl"

    def traces_run() -> dict:
        script_args = TracesArguments(problems_path=str(problems), output_path=str(output), num_samples=3)
        return main(script_args, TeacherArguments(batch_size=5))

    summary = traces_run()
    assert (summary["problems"], summary["total"], summary["written"]) == (4, 12, 12)
    complete = read_jsonl(output)
    ids = [row["id"] for row in read_jsonl(problems)]
    assert [(row["id"], row["sample"]) for row in complete] == [(i, k) for i in ids for k in range(3)]
    assert len({row["reasoning"] for row in complete[:3]}) == 3  # three different traces of one problem
    # A kill after 8 rows, and (p1, sample 1) lost on the way: the rerun writes exactly the 5 missing (id, sample).
    lines = output.read_bytes().splitlines(keepends=True)
    output.write_bytes(b"".join(lines[:4] + lines[5:8]))
    summary = traces_run()
    assert (summary["already_done"], summary["written"]) == (7, 5)
    traces = read_jsonl(output)
    assert sorted((row["id"], row["sample"]) for row in traces) == sorted((i, k) for i in ids for k in range(3))
    assert sorted(traces, key=lambda row: (row["id"], row["sample"])) == complete  # the same traces, redone
    assert traces_run()["written"] == 0
    stats = verify_stats(output, tmp_path)
    assert (stats["kept"], stats["dropped"]["duplicate"]) == (12, 0)


# --- bad input: a StageInputError naming the value, before any work ---------------------------------------------------


@pytest.fixture
def existing_output(tmp_path) -> Path:
    """An output file from an earlier run, with a torn last line that a started run would cut."""
    path = tmp_path / "traces.jsonl"
    path.write_bytes(b'{"id": "x", "teacher": "procedural"}\n{"id": "y", "tea')
    return path


@pytest.mark.parametrize(
    "case",
    ["missing file", "empty file", "missing column", "duplicate ids", "model path", "endpoint", "output suffix"],
)
def test_bad_input_fails_before_any_work(case, tmp_path, existing_output):
    problems = tmp_path / "problems.jsonl"
    rows = make_problems(3, "train")
    write_rows(problems, rows)
    output, teacher, expected = existing_output, {}, None
    if case == "missing file":
        problems, expected = tmp_path / "absent.jsonl", "absent.jsonl"
    elif case == "empty file":
        problems.write_text("")
        expected = "is empty"
    elif case == "missing column":
        write_rows(problems, [{k: v for k, v in row.items() if k != "answer"} for row in rows])
        expected = "'answer'"
    elif case == "duplicate ids":
        write_rows(problems, [*rows, rows[0]])
        expected = rows[0]["id"]
    elif case == "model path":
        teacher = {"teacher": "transformers", "teacher_model": str(tmp_path / "no-such-model")}
        expected = "no-such-model"
    elif case == "endpoint":
        url = f"http://127.0.0.1:{free_port()}/v1"
        teacher = {"teacher": "openai", "teacher_model": "tiny", "base_url": url}
        expected = f"{url}/models"
    elif case == "output suffix":
        output, expected = tmp_path / "traces.parquet", "traces.parquet"
    before = existing_output.read_bytes()
    with pytest.raises(StageInputError) as info:
        run(problems, output, **teacher)
    assert expected in str(info.value)
    assert existing_output.read_bytes() == before
    assert not (tmp_path / "traces.parquet").exists()


def test_cli_reports_bad_input_in_one_line(tmp_path, capsys):
    from cotx_rl.cli import main as cli_main

    missing = tmp_path / "absent.jsonl"
    code = cli_main(["traces", "--problems_path", str(missing), "--output_path", str(tmp_path / "t.jsonl")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and str(missing) in err


def test_parser_reads_recipe_keys(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "problems_path: p.jsonl\noutput_path: t.jsonl\nteacher: openai\nmax_concurrency: 3\nlimit: 7\n"
        "num_samples: 4\nextra_sampling:\n  top_k: 20\n  min_p: 0.0\n"
        "vllm_engine_kwargs: {tensor_parallel_size: 2, gpu_memory_utilization: 0.9}\n"
    )
    script_args, teacher_args = make_parser().parse_args_and_config(["--config", str(recipe), "--max_retries", "1"])
    assert (script_args.problems_path, script_args.limit, script_args.num_samples) == ("p.jsonl", 7, 4)
    assert (teacher_args.teacher, teacher_args.max_concurrency, teacher_args.max_retries) == ("openai", 3, 1)
    assert teacher_args.extra_sampling == {"top_k": 20, "min_p": 0.0}
    assert teacher_args.vllm_engine_kwargs == {"tensor_parallel_size": 2, "gpu_memory_utilization": 0.9}
    # On the command line, a mapping is JSON.
    _, teacher_args = make_parser().parse_args_and_config(
        ["--config", str(recipe), "--extra_sampling", '{"top_k": 5}']
    )
    assert teacher_args.extra_sampling == {"top_k": 5}


@pytest.mark.parametrize(
    "flags,expected",
    [
        (["--extra_sampling", "{top_k: 5}"], "extra_sampling must be a JSON object"),
        (["--vllm_engine_kwargs", "[1, 2]"], "vllm_engine_kwargs must be a mapping"),
        (["--num_samples", "0"], "num_samples must be a positive integer, got 0"),
    ],
)
def test_cli_refuses_bad_sampling_settings_in_one_line(flags, expected, tmp_path, capsys):
    from cotx_rl.cli import main as cli_main

    problems = write_rows(tmp_path / "problems.jsonl", make_problems(2, "train"))
    argv = ["traces", "--problems_path", str(problems), "--output_path", str(tmp_path / "t.jsonl"), *flags]
    code = cli_main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and expected in err, err
    assert not (tmp_path / "t.jsonl").exists()


# --- a run killed mid-way ---------------------------------------------------------------------------------------------


def complete_lines(path: Path) -> list[bytes]:
    data = path.read_bytes() if path.exists() else b""
    return data[: data.rfind(b"\n") + 1].splitlines(keepends=True)


def test_killed_run_resumes_without_loss_or_duplicates(problems_path, tmp_path, chat_server):
    chat_server.delay_seconds = 0.25
    output = tmp_path / "traces.jsonl"
    settings = {"teacher": "openai", "teacher_model": "tiny", "base_url": chat_server.url, "max_retries": 0}
    settings.update(batch_size=2, max_concurrency=2)
    flags = [f"--{key}={value}" for key, value in settings.items()]
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    command = [sys.executable, "-m", "cotx_rl.traces", "--problems_path", str(problems_path)]
    process = subprocess.Popen(
        [*command, "--output_path", str(output), *flags],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while len(complete_lines(output)) < 4:
            assert process.poll() is None, process.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the traces stage wrote nothing within 60 s"
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
        process.stderr.close()
    written = complete_lines(output)
    assert 4 <= len(written) < 20  # killed mid-way
    chat_server.delay_seconds = 0.0
    summary = run(problems_path, output, **settings)
    assert summary["already_done"] == len(written) and summary["written"] == 20 - len(written)
    assert complete_lines(output)[: len(written)] == written  # nothing written before the kill was lost
    ids = [row["id"] for row in read_jsonl(output)]
    assert sorted(ids) == sorted(row["id"] for row in read_jsonl(problems_path))  # each id exactly once


# --- a real OpenAI-compatible server: `transformers serve` ------------------------------------------------------------


@pytest.fixture
def transformers_server(tmp_path, shared_data):
    """`transformers serve` pinned to a tiny random Qwen2 saved with the real DeepSeek-R1-Distill-Qwen tokenizer and
    chat template. Yields `(base_url, model_dir)`."""
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    source = shared_data / "real" / "tokenizers" / "deepseek-r1-distill-qwen"
    config = json.loads((source / "config.json").read_text())  # the real 32B config, shrunk to one tiny layer
    config.update(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                  num_key_value_heads=1, max_window_layers=1, torch_dtype="float32")  # fmt: skip
    model_dir = tmp_path / "teacher"
    Qwen2ForCausalLM(Qwen2Config(**config)).save_pretrained(model_dir)
    AutoTokenizer.from_pretrained(source).save_pretrained(model_dir)
    with transformers_serve(model_dir, tmp_path / "server.log") as url:
        yield url, model_dir


def test_traces_from_transformers_serve(transformers_server, tmp_path):
    from cotx_rl.cli import main as cli_main

    url, model_dir = transformers_server
    problems = write_rows(tmp_path / "problems.jsonl", make_problems(3, "train"))
    output = tmp_path / "traces.jsonl"
    recipe = tmp_path / "traces.yaml"
    recipe.write_text(
        f"problems_path: {problems}\noutput_path: {output}\nteacher: openai\nteacher_model: {model_dir}\n"
        f"base_url: {url}\nmax_new_tokens: 8\ntemperature: 0.6\nnum_samples: 2\nmax_concurrency: 2\n"
        "request_timeout: 60\nmax_retries: 1\n"
    )
    assert cli_main(["traces", "--config", str(recipe)]) == 0
    traces = read_jsonl(output)
    rows = read_jsonl(problems)
    assert [(row["id"], row["sample"]) for row in traces] == [(p["id"], k) for p in rows for k in range(2)]
    for problem, row in zip([p for p in rows for _ in range(2)], traces):
        assert set(row) == set(problem) | TRACE_COLUMNS | {"sample"}, row
        assert {key: row[key] for key in problem} == problem
        assert row["teacher"] == f"openai:{model_dir}" and row["finish_reason"] in ("stop", "length")
        assert isinstance(row["reasoning"], str) and isinstance(row["response"], str) and row["reasoning"]
        assert row["teacher_correct"] is False  # a random model does not compute
