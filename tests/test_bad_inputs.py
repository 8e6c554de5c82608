"""Issue 8's probe of bad inputs, rerun: each ends in one line that names the file, the line, the id or the value (exit
code 2), before the work starts; nothing is dropped without a count; nothing written is lost.

CLI cases run `cotx_rl.cli.main` in this process where the stage imports TRL (its start-up costs seconds), and in a
subprocess where a signal, a lock or a resource limit is the point. No model is loaded and nothing trains.
"""

import errno
import json
import logging
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cotx_rl import cli, problems
from cotx_rl import io as cotx_io
from cotx_rl.arithmetic import make_problems
from cotx_rl.io import StageInputError, read_rows

REPO = Path(__file__).resolve().parents[1]
CPU = ["--use_cpu", "true", "--bf16", "false", "--gradient_checkpointing", "false", "--report_to", "none"]
TINY = ["--student_hidden_size", "32", "--student_num_layers", "1", "--student_num_heads", "2"]
# A folder no process may create files in, root included (sysfs); chmod does not stop root, who runs these tests here.
READ_ONLY = Path("/sys")


def run_cli(capsys, *argv) -> tuple[int, str]:
    """Run the CLI in this process; returns the exit code and stderr.

    The CLI gives the project's loggers a handler on the stderr of the moment, which pytest closes after the test:
    the loggers get their handlers back, so that no later test logs into a closed stream.
    """
    loggers = [logging.getLogger(name) for name in ("cotx_rl", "rewards")]
    saved = [(logger.handlers[:], logger.level) for logger in loggers]
    try:
        code = cli.main([str(a) for a in argv])
    finally:
        for logger, (handlers, level) in zip(loggers, saved):
            logger.handlers[:] = handlers
            logger.setLevel(level)
    return code, capsys.readouterr().err


def run_cli_process(*argv, cwd=None, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "cotx_rl.cli", *(str(a) for a in argv)]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, **kwargs)


def one_line(code: int, err: str, stage: str, *fragments: str) -> str:
    """Assert exit code 2, no traceback, and a last stderr line from `stage` that holds every fragment."""
    assert code == 2, err
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"cotx-rl {stage}: "), err
    for fragment in fragments:
        assert fragment in last, last
    return last


def write_jsonl(path: Path, rows: list, tail: bytes = b"") -> Path:
    """Rows as JSONL (any JSON value per line), then `tail` as raw bytes (a torn line)."""
    path.write_bytes(b"".join(json.dumps(row).encode() + b"\n" for row in rows) + tail)
    return path


@pytest.fixture
def problem_rows() -> list[dict]:
    return [{k: row[k] for k in ("id", "question", "answer")} for row in make_problems(20, "train")]


# --- JSONL: nothing skipped without a word ----------------------------------------------------------------------------


@pytest.mark.parametrize("stage", ["traces", "verify", "compress", "eval"])
def test_a_torn_last_line_is_named_not_dropped(stage, problem_rows, tmp_path, capsys):
    # 19 whole rows and a 20th cut by a kill: every stage used to go on with 19 rows (eval: "19 problems").
    rows = [{**row, "reasoning": "r", "response": "\\boxed{1}"} for row in problem_rows[:19]]
    data = write_jsonl(tmp_path / "in.jsonl", rows, b'{"id": "p-19", "question": "Comp')
    out = tmp_path / "out"
    argv = {
        "traces": ["--problems_path", data, "--output_path", out / "t.jsonl"],
        "verify": ["--traces_path", data, "--output_path", out / "kept.jsonl"],
        "compress": ["--traces_path", data, "--output_path", out / "examples.jsonl"],
        "eval": ["--test_path", data, "--output_dir", out, "--models", json.dumps({"sft": str(tmp_path / "model")})],
    }[stage]
    code, err = run_cli(capsys, stage, *argv)
    last = one_line(code, err, stage, f"'{data}' line 20 is not JSON", "it is the last line and has no line end")
    assert "(Unterminated string starting at column 28)" in last
    assert not out.exists()


def test_a_line_that_is_not_an_object_is_named(problem_rows, tmp_path, capsys):
    data = write_jsonl(tmp_path / "p.jsonl", [*problem_rows[:2], [1, 2], *problem_rows[2:]])
    code, err = run_cli(capsys, "traces", "--problems_path", data, "--output_path", tmp_path / "t.jsonl")
    one_line(code, err, "traces", f"Problems file '{data}' line 3 holds a JSON list ([1, 2]), not an object")
    assert not (tmp_path / "t.jsonl").exists()


def test_a_torn_multibyte_line_read_by_verify_is_named(tmp_path, capsys):
    good = {"id": "a", "question": "Wie viel ist 2 + 3?", "answer": "5", "reasoning": "Zwei plus drei ist fünf."}
    torn = json.dumps({**good, "id": "b"}, ensure_ascii=False).encode()
    data = write_jsonl(tmp_path / "traces.jsonl", [good], torn[: torn.index("ü".encode()) + 1] + b'"}\n')
    code, err = run_cli(capsys, "verify", "--traces_path", data, "--output_path", tmp_path / "kept.jsonl")
    one_line(code, err, "verify", f"Traces file '{data}' line 2 is not UTF-8 text")


def test_a_file_that_is_not_parquet_is_named(tmp_path, capsys):
    data = tmp_path / "p.parquet"
    data.write_bytes(b"PAR1 cut short by a copy")
    code, err = run_cli(capsys, "traces", "--problems_path", data, "--output_path", tmp_path / "t.jsonl")
    one_line(code, err, "traces", f"Problems file '{data}' cannot be read as parquet")


def test_rows_keep_their_line_numbers(tmp_path):
    data = write_jsonl(tmp_path / "p.jsonl", [{"id": "a"}, {"id": "b"}])
    data.write_bytes(data.read_bytes().replace(b"\n", b"\n\n", 1))  # a blank line holds no row
    rows = read_rows(data, "Problems file")
    assert rows == [{"id": "a"}, {"id": "b"}] and rows.line_numbers == [1, 3]
    assert rows.where(1) == f"Problems file '{data}' line 3 (id 'b')"
    assert rows.select([1]).line_numbers == [3]


# --- every row checked, not the first one ------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", ["traces", "verify"])
def test_a_column_missing_from_row_5_is_named(stage, problem_rows, tmp_path, capsys):
    rows = [{**row, "reasoning": "r"} for row in problem_rows]
    del rows[4]["answer"]
    data = write_jsonl(tmp_path / "in.jsonl", rows)
    output = ["--problems_path", data, "--output_path", tmp_path / "t.jsonl"]
    code, err = run_cli(capsys, stage, *(output if stage == "traces" else ["--traces_path", data, *output[2:]]))
    one_line(code, err, stage, f"'{data}' line 5 (id '{rows[4]['id']}'): lacks column(s) ['answer']")
    assert not (tmp_path / "t.jsonl").exists()


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("question", 5, "question is a number (5), not text"),
        ("question", "  ", "question is empty"),
        ("answer", None, "answer is null"),
        ("answer", [], "answer is [], not a gold answer"),
    ],
)
def test_traces_names_a_bad_problem_row(column, value, message, problem_rows, tmp_path, capsys):
    problem_rows[1][column] = value
    data = write_jsonl(tmp_path / "p.jsonl", problem_rows)
    code, err = run_cli(capsys, "traces", "--problems_path", data, "--output_path", tmp_path / "t.jsonl")
    one_line(code, err, "traces", f"'{data}' line 2 (id '{problem_rows[1]['id']}'): {message}")
    assert not (tmp_path / "t.jsonl").exists()


def sft_examples(count: int = 6) -> list[dict]:
    return [
        {"id": f"p-{i}", "question": "Compute 2 + 3.", "answer": "5", "budget_mode": "exact", "budget_tokens": 32,
         "reasoning": "2 + 3 = 5.", "response": "\\boxed{5}"}
        for i in range(count)
    ]  # fmt: skip


def sft_argv(data: Path, output: Path) -> list:
    return [
        "sft", "--dataset_path", data, "--model_name_or_path", "embedded", "--output_dir", output, "--max_steps", "1",
        "--per_device_train_batch_size", "2", "--save_strategy", "no", "--max_length", "512", *TINY, *CPU,
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"reasoning": None}, "reasoning is null"),
        ({"reasoning": " "}, "reasoning is empty"),
        ({"reasoning": ...}, "lacks column(s) ['reasoning']"),
        ({"budget_mode": "often"}, "budget_mode is 'often', not one of exact, max, auto"),
        ({"budget_tokens": None}, "budget_tokens is null"),
        ({"budget_mode": "max", "budget_tokens": 0}, "budget_tokens is 0 in max mode, not a positive integer"),
        ({"budget_mode": "auto", "budget_tokens": "32"}, "budget_tokens is '32' in auto mode, not a positive integer"),
    ],
)
def test_sft_names_a_bad_example_before_loading_the_model(change, message, tmp_path, capsys):
    rows = sft_examples()
    rows[4].update(change)
    rows[4] = {key: value for key, value in rows[4].items() if value is not ...}
    data = write_jsonl(tmp_path / "examples.jsonl", rows)
    code, err = run_cli(capsys, *sft_argv(data, tmp_path / "sft"))
    one_line(code, err, "sft", f"SFT dataset '{data}' line 5 (id 'p-4'): {message}")
    assert not (tmp_path / "sft").exists()


@pytest.mark.parametrize("stage", ["generate", "eval", "grpo"])
def test_a_model_folder_without_a_model_is_named(stage, problem_rows, tmp_path, capsys):
    # The output folder of an unfinished run: checkpoints, no model. Loading it ended in transformers' traceback.
    folder = tmp_path / "student"
    (folder / "checkpoint-5").mkdir(parents=True)
    (folder / "checkpoint-20").mkdir()
    data = write_jsonl(tmp_path / "p.jsonl", problem_rows)
    argv = {
        "generate": ["generate", "--model", folder, "--input", data, "--output", tmp_path / "a.jsonl",
                     "--budget_mode", "auto"],
        "eval": ["eval", "--test_path", data, "--output_dir", tmp_path / "eval", "--models",
                 json.dumps({"sft": str(folder)})],
        "grpo": ["grpo", "--sft_model_path", folder, "--problems_path", data, "--output_dir", tmp_path / "grpo",
                 "--num_generations", "2", "--per_device_train_batch_size", "2", "--max_completion_length", "600", *CPU],
    }[stage]  # fmt: skip
    code, err = run_cli(capsys, *argv)
    one_line(code, err, stage, f"'{folder}' holds no model (neither config.json nor adapter_config.json); its latest "
             f"checkpoint is '{folder / 'checkpoint-20'}'")  # fmt: skip


@pytest.mark.parametrize("stage", ["generate", "eval"])
def test_an_uncached_hub_name_offline_is_named(stage, problem_rows, tmp_path, capsys, monkeypatch):
    # Offline, a Hub name that is not in the cache ended in transformers' OSError traceback while loading.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    name = "someone/not-a-cached-model"
    data = write_jsonl(tmp_path / "p.jsonl", problem_rows)
    argv = {
        "generate": ["generate", "--model", name, "--input", data, "--output", tmp_path / "a.jsonl",
                     "--budget_mode", "auto"],
        "eval": ["eval", "--test_path", data, "--output_dir", tmp_path / "eval", "--models", json.dumps({"sft": name})],
    }[stage]  # fmt: skip
    code, err = run_cli(capsys, *argv)
    one_line(code, err, stage, f"'{name}' is not in the local Hugging Face cache")


def test_sft_checks_its_output_folder_before_loading_the_model(tmp_path, capsys):
    data = write_jsonl(tmp_path / "examples.jsonl", sft_examples())
    (tmp_path / "taken").write_text("a file where the output folder should be\n")
    code, err = run_cli(capsys, *sft_argv(data, tmp_path / "taken"))
    one_line(code, err, "sft", f"SFT output_dir '{tmp_path / 'taken'}' is a file, not a folder")


def grpo_argv(problems_path: Path, sft_dir: Path, output: Path) -> list:
    sft_dir.mkdir(exist_ok=True)  # exists and looks like a model, so the checks before it pass; nothing may load it
    (sft_dir / "config.json").write_text("{}\n")
    return [
        "grpo", "--sft_model_path", sft_dir, "--problems_path", problems_path, "--output_dir", output,
        "--num_generations", "2", "--per_device_train_batch_size", "2", "--max_completion_length", "600",
        "--max_steps", "1", *CPU,
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"question": ...}, "line 5 (id 'embedded-arithmetic-train-000004'): lacks column(s) ['question']"),
        ({"question": None}, "line 5 (id 'embedded-arithmetic-train-000004'): question is null"),
        ({"budget_mode": "often"}, "line 5 (id 'embedded-arithmetic-train-000004'): budget_mode is 'often'"),
    ],
)
def test_grpo_names_a_bad_problem_row_before_loading(change, message, problem_rows, tmp_path, capsys):
    problem_rows[4].update(change)
    problem_rows[4] = {key: value for key, value in problem_rows[4].items() if value is not ...}
    data = write_jsonl(tmp_path / "p.jsonl", problem_rows)
    code, err = run_cli(capsys, *grpo_argv(data, tmp_path / "sft", tmp_path / "grpo"))
    one_line(code, err, "grpo", f"GRPO problems '{data}' {message}")
    assert not (tmp_path / "grpo").exists()


@pytest.mark.parametrize("count", ["0", "1"])
def test_grpo_names_num_generations_below_two(count, problem_rows, tmp_path, capsys):
    # TRL's own config check divides by num_generations: 0 used to end in a ZeroDivisionError traceback.
    data = write_jsonl(tmp_path / "p.jsonl", problem_rows)
    code, err = run_cli(capsys, *grpo_argv(data, tmp_path / "sft", tmp_path / "grpo"), "--num_generations", count)
    one_line(
        code,
        err,
        "grpo",
        f"num_generations must be at least 2 (GRPO compares completions within a group), got {count}.",
    )
    assert not (tmp_path / "grpo").exists()


def test_grpo_refuses_problems_without_any_gold(problem_rows, tmp_path, capsys):
    data = write_jsonl(tmp_path / "p.jsonl", [{**row, "answer": None} for row in problem_rows])
    code, err = run_cli(capsys, *grpo_argv(data, tmp_path / "sft", tmp_path / "grpo"))
    one_line(code, err, "grpo", f"GRPO problems '{data}' has no row with a gold answer")


def test_grpo_checks_its_output_folder_before_loading(problem_rows, tmp_path, capsys):
    data = write_jsonl(tmp_path / "p.jsonl", problem_rows)
    (tmp_path / "taken").write_text("x\n")
    code, err = run_cli(capsys, *grpo_argv(data, tmp_path / "sft", tmp_path / "taken"))
    one_line(code, err, "grpo", f"GRPO output_dir '{tmp_path / 'taken'}' is a file, not a folder")


def test_grpo_reads_number_golds_as_text_and_counts_rows_without_gold(problem_rows, tmp_path, caplog):
    from cotx_rl.grpo import load_problems

    problem_rows[0]["answer"], problem_rows[1]["answer"] = 42, 0.5
    problem_rows[2]["answer"], problem_rows[6]["answer"] = None, ""
    data = write_jsonl(tmp_path / "p.jsonl", problem_rows)
    with caplog.at_level(logging.WARNING, logger="cotx_rl"):
        rows = load_problems(str(data), [32, 64])
    assert len(rows) == 18 and [rows[0]["answer"], rows[1]["answer"]] == ["42", "0.5"]
    assert rows.line_numbers[2] == 4
    assert f"GRPO problems '{data}': dropped 2 rows without a gold answer (lines 3 and 7)" in caplog.text


# --- the problems stage: unique ids, no question on both sides, every drop counted ---------------------------------


def test_problems_refuses_repeated_source_ids(tmp_path, capsys):
    rows = [{"uid": f"u{i}", "question": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(6)]
    rows[4]["uid"] = "u1"
    source = write_jsonl(tmp_path / "mine.jsonl", rows)
    out = tmp_path / "out"
    code, err = run_cli(capsys, "problems", "--source", source, "--id_column", "uid", "--output_dir", out)
    one_line(code, err, "problems", f"Problems file '{source}' repeats id 'u1' on lines 2 and 5")
    assert not out.exists()


def test_a_test_size_split_never_puts_one_question_on_both_sides(tmp_path):
    # 40 questions, each twice under a made-up id: a split by row put about half of them on both sides.
    rows = [{"question": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(40)] * 2
    source = write_jsonl(tmp_path / "mine.jsonl", rows)
    paths = problems.main(problems.ProblemsArguments(output_dir=str(tmp_path / "out"), source=str(source),
                                                     test_size=0.5))  # fmt: skip
    train, test = read_rows(paths["train"]), read_rows(paths["test"])
    assert len(train) + len(test) == 80 and len(test) == 40
    assert not {row["question"] for row in train} & {row["question"] for row in test}
    assert not {row["id"] for row in train} & {row["id"] for row in test}


def test_source_splits_share_no_id_and_test_questions_leave_train(caplog):
    def table(name, questions, ids):
        return cotx_io.Rows([{"id": i, "question": q} for i, q in zip(ids, questions)], name=f"Dataset 'd' split {name!r}",
                    unit="row")  # fmt: skip

    with caplog.at_level(logging.WARNING, logger="cotx_rl"):
        splits = problems.separate_splits(
            {"train": table("train", ["a", "b", " c "], ["1", "2", "3"]), "test": table("test", ["c"], ["9"])}
        )
    assert [row["question"] for row in splits["train"]] == ["a", "b"]
    assert "dropped 1 rows whose question is also in the test split (row 3)" in caplog.text
    with pytest.raises(StageInputError, match="split 'train' row 2 and Dataset 'd' split 'test' row 1 share id '2'"):
        problems.separate_splits(
            {"train": table("train", ["a", "b"], ["1", "2"]), "test": table("test", ["z"], ["2"])}
        )


def test_problems_reads_number_golds_and_counts_every_drop(tmp_path, caplog):
    rows = [
        {"question": "What is 40 + 2?", "answer": 42},
        {"question": "What is half of 1?", "answer": 0.5},
        {"question": "What is 3 + 4?", "answer": "7"},
        {"question": None, "answer": "1"},
        {"question": "What is 1 + 1?", "answer": None},
        {"question": "What is 2 + 2?", "answer": "4"},
    ]
    source = write_jsonl(tmp_path / "mine.jsonl", rows)
    with caplog.at_level(logging.WARNING, logger="cotx_rl"):
        paths = problems.main(problems.ProblemsArguments(output_dir=str(tmp_path / "out"), source=str(source)))
    written = read_rows(paths["train"])
    assert [(row["question"], row["answer"]) for row in written] == [
        ("What is 40 + 2?", "42"), ("What is half of 1?", "0.5"), ("What is 3 + 4?", "7"), ("What is 2 + 2?", "4"),
    ]  # fmt: skip
    assert "dropped 1 rows without a question (null, empty or not text) (line 4)" in caplog.text
    assert "dropped 1 rows without a readable gold answer (line 5)" in caplog.text


def test_problems_checks_its_output_folder_first(tmp_path, capsys):
    (tmp_path / "out").write_text("x\n")
    code, err = run_cli(capsys, "problems", "--output_dir", tmp_path / "out", "--num_train", "5", "--num_test", "2")
    one_line(code, err, "problems", f"Problems output folder '{tmp_path / 'out'}' is a file, not a folder")


def test_the_pipeline_names_the_stage_whose_input_is_bad(tmp_path, capsys):
    (tmp_path / "out").write_text("x\n")
    (tmp_path / "problems.yaml").write_text(f"output_dir: {tmp_path / 'out'}\nnum_train: 5\nnum_test: 2\n")
    (tmp_path / "pipeline.yaml").write_text(
        f"output_root: {tmp_path / 'run'}\nstages:\n  - {{id: data, stage: problems, config: {tmp_path / 'problems.yaml'}}}\n"
    )
    code, err = run_cli(capsys, "pipeline", "--config", tmp_path / "pipeline.yaml")
    one_line(code, err, "pipeline", "stage 'data' (problems): Problems output folder", "is a file, not a folder")
    assert not (tmp_path / "run" / ".done" / "data").exists()


# --- duplicate ids: found with their lines, for any stage to refuse or count ------------------------------------------


def test_duplicate_ids_are_found_with_their_lines(tmp_path):
    data = write_jsonl(tmp_path / "t.jsonl", [{"id": "a"}, {"id": "b"}, {"id": "a"}, {"id": "b"}, {"id": "a"}])
    rows = read_rows(data, "Traces file")
    assert cotx_io.duplicate_ids(rows) == {"a": [1, 3, 5], "b": [2, 4]}
    with pytest.raises(StageInputError) as info:
        cotx_io.check_unique_ids(rows)
    assert str(info.value) == (
        f"Traces file '{data}' repeats id 'a' on lines 1, 3 and 5 (and 1 more repeated ids); ids must be unique: keep "
        "one row per id."
    )


# --- the traces stage: one run per output file, and what a resume finds -----------------------------------------------


def traces_process(problems_path: Path, output: Path, url: str) -> subprocess.Popen:
    flags = ["--teacher", "openai", "--teacher_model", "tiny", "--base_url", url, "--max_retries", "0",
             "--batch_size", "2", "--max_concurrency", "2"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")} | {"PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "cotx_rl.traces", "--problems_path", str(problems_path), "--output_path", str(output),
         *flags], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def wait_for_lines(path: Path, count: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while not path.exists() or path.read_bytes().count(b"\n") < count:
        assert process.poll() is None, process.stderr.read()[-2000:]
        assert time.monotonic() < deadline, "the traces stage wrote nothing within 60 s"
        time.sleep(0.05)


def test_a_second_traces_run_on_one_output_stops_at_once(problem_rows, tmp_path, chat_server):
    chat_server.delay_seconds = 0.5  # the first run takes about 5 s: the second starts well before it ends
    data = write_jsonl(tmp_path / "p.jsonl", problem_rows)
    output = tmp_path / "traces.jsonl"
    first = traces_process(data, output, chat_server.url)
    try:
        wait_for_lines(output, 2, first)
        second = traces_process(data, output, chat_server.url)
        _, err = second.communicate(timeout=120)
        one_line(second.returncode, err, "traces", f"Traces output file '{output}' is being written by another run")
    finally:
        first.wait(timeout=120)
        first.stderr.close()
    assert first.returncode == 0
    ids = [row["id"] for row in read_rows(output)]
    assert sorted(ids) == sorted(row["id"] for row in problem_rows)  # each id once


def test_ctrl_c_ends_in_one_line_and_keeps_what_was_written(problem_rows, tmp_path, chat_server):
    chat_server.delay_seconds = 0.2
    data = write_jsonl(tmp_path / "p.jsonl", problem_rows)
    output = tmp_path / "traces.jsonl"
    process = traces_process(data, output, chat_server.url)
    try:
        wait_for_lines(output, 2, process)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "cotx-rl traces: interrupted", err
    assert 2 <= len(read_rows(output)) < 20  # every line written parses


def run_traces(problems_path: Path, output: Path, **settings) -> dict:
    from cotx_rl.teachers import TeacherArguments
    from cotx_rl.traces import TracesArguments, main

    return main(
        TracesArguments(problems_path=str(problems_path), output_path=str(output)), TeacherArguments(**settings)
    )


def test_a_resume_counts_the_ids_an_earlier_file_repeats(problem_rows, tmp_path, caplog):
    data = write_jsonl(tmp_path / "p.jsonl", problem_rows[:4])
    output = tmp_path / "traces.jsonl"
    run_traces(data, output)
    lines = output.read_bytes().splitlines(keepends=True)
    output.write_bytes(b"".join([*lines, lines[0], lines[2], lines[0]]))  # what two runs on one file used to leave
    with caplog.at_level(logging.WARNING, logger="cotx_rl"):
        summary = run_traces(data, output)
    assert (summary["already_done"], summary["written"], summary["repeated_in_output"]) == (4, 0, 3)
    assert f"repeats 2 ids in 3 extra rows (id '{problem_rows[0]['id']}' on lines 1, 5 and 7" in caplog.text


def test_a_resume_says_what_torn_tail_it_cut(problem_rows, tmp_path, caplog):
    data = write_jsonl(tmp_path / "p.jsonl", problem_rows[:4])
    output = tmp_path / "traces.jsonl"
    output.write_bytes(b'{"id": "embedded-arithmetic-train-000000", "question": "Comp')
    with caplog.at_level(logging.WARNING, logger="cotx_rl"):
        summary = run_traces(data, output)
    assert summary["written"] == 4
    assert f"Cut a torn last line (60 bytes) from {output}" in caplog.text


@pytest.mark.skipif(not READ_ONLY.is_dir(), reason="needs Linux sysfs as a folder nobody can write")
def test_traces_refuses_an_output_it_cannot_write_before_tracing(problem_rows, tmp_path, capsys):
    data = write_jsonl(tmp_path / "p.jsonl", problem_rows)
    output = READ_ONLY / "cotx-probe" / "traces.jsonl"
    code, err = run_cli(capsys, "traces", "--problems_path", data, "--output_path", output)
    one_line(code, err, "traces", f"Traces output file '{output}' cannot be written", f"in '{READ_ONLY}'")


# --- outputs: checked before the work, and a write that fails all the same ----------------------------------------


def test_a_nearly_full_disk_is_refused_before_the_work(tmp_path, monkeypatch):
    real = os.statvfs(tmp_path)

    class Full:
        f_bavail, f_frsize = 3, real.f_frsize  # a few blocks left

    monkeypatch.setattr(os, "statvfs", lambda path: Full)
    with pytest.raises(StageInputError, match=f"'{tmp_path / 'out.jsonl'}' cannot be written: only 0.0 MiB free"):
        cotx_io.check_writable_output(tmp_path / "out.jsonl")
    assert cotx_io.MIN_FREE_BYTES > 3 * real.f_frsize


def test_a_file_where_a_folder_should_be_is_named(tmp_path):
    (tmp_path / "runs").write_text("x\n")
    with pytest.raises(StageInputError, match=f"'{tmp_path / 'runs'}' is a file where a folder should be"):
        cotx_io.check_writable_output(tmp_path / "runs" / "a" / "report.json")


def limit_file_size() -> None:
    """In the child: files may not grow past 2 kB, and a write past it fails with EFBIG instead of killing."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))


def test_a_write_that_fails_names_the_path_and_loses_nothing(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "train.jsonl").write_text("an earlier run's problems\n")
    done = run_cli_process("problems", "--output_dir", out, "--num_train", "50", "--num_test", "5",
                           preexec_fn=limit_file_size)  # fmt: skip
    last = one_line(
        done.returncode, done.stderr, "problems", f"Cannot write Problems output file '{out / 'train.jsonl'}'"
    )
    assert os.strerror(errno.EFBIG) in last
    assert (out / "train.jsonl").read_text() == "an earlier run's problems\n"
    assert sorted(p.name for p in out.iterdir()) == ["train.jsonl"]  # no .tmp left behind
