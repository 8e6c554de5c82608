"""Recipes: includes of the run-level settings, `${output_root}`, and one clear message for every bad recipe."""

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from cotx_rl import compress, pipeline
from cotx_rl.config import read_yaml
from cotx_rl.io import StageInputError, read_rows

REPO = Path(__file__).resolve().parents[1]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def parse_compress(*argv):
    return compress.make_parser().parse_args_and_config(list(argv))


@pytest.fixture
def run_folder(tmp_path):
    write(tmp_path / "run.yaml", "output_root: /data/run1\nbudget_grid: [8, 16]\nanswer_tokens: 5\nseed: 3\n"
          "env: {COTX_TEST_VARIABLE: from-run}\n")  # fmt: skip
    write(tmp_path / "compress.yaml", "include: run.yaml\ntraces_path: ${output_root}/kept.jsonl\n"
          "output_path: ${output_root}/examples.jsonl\n")  # fmt: skip
    return tmp_path


def test_an_include_reaches_the_stage_and_the_placeholder_is_filled(run_folder, monkeypatch):
    monkeypatch.delenv("COTX_TEST_VARIABLE", raising=False)
    args, teacher, _, run = parse_compress("--config", str(run_folder / "compress.yaml"))
    assert (args.traces_path, args.output_path) == ("/data/run1/kept.jsonl", "/data/run1/examples.jsonl")
    assert (run.budget_grid, run.answer_tokens, teacher.seed) == ([8, 16], 5, 3)
    assert os.environ["COTX_TEST_VARIABLE"] == "from-run"


def test_flags_win_over_the_recipe_and_output_root_moves_the_run(run_folder):
    args, _, _, run = parse_compress(
        "--config", str(run_folder / "compress.yaml"), "--output_root", "/elsewhere", "--budget_grid", "4", "12",
        "--stats_path", "${output_root}/stats.json",
    )  # fmt: skip
    assert args.traces_path == "/elsewhere/kept.jsonl" and args.stats_path == "/elsewhere/stats.json"
    assert run.budget_grid == [4, 12]


def test_the_recipe_wins_over_its_include(run_folder):
    write(
        run_folder / "own.yaml", "include: run.yaml\ntraces_path: t.jsonl\noutput_path: o.jsonl\nbudget_grid: [32]\n"
    )
    assert parse_compress("--config", str(run_folder / "own.yaml"))[-1].budget_grid == [32]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "traces_path: a\noutput_path: b.jsonl\nmode_seeed: 1\n",
            "unknown key 'mode_seeed' \\(did you mean 'mode_seed'\\?\\)",
        ),
        ("traces_path: a\noutput_path: [b\n", "line 3, column 1 is not valid YAML"),
        ("- a\n- b\n", "must hold a mapping"),
        (
            "traces_path: a\noutput_path: b.jsonl\ntraces_path: c\n",
            "line 3, column 1 is not valid YAML: key 'traces_path' is given twice \\(first on line 1\\)",
        ),
        (
            "traces_path: a\noutput_path: b.jsonl\nmode_proportions: {exact: 1, exact: 2}\n",
            "key 'exact' is given twice",
        ),
        (
            "include: nowhere.yaml\ntraces_path: a\noutput_path: b.jsonl\n",
            "includes 'nowhere.yaml', which does not exist",
        ),
        ("include: bad.yaml\ntraces_path: a\noutput_path: b.jsonl\n", "includes itself"),
        ("traces_path: ${output_root}/a\noutput_path: b.jsonl\n", "no output_root is set"),
        ("traces_path: a\noutput_path: b.jsonl\nbudget_grid: [16, 8]\n", "budget_grid \\[16, 8\\] must be"),
        ("traces_path: a\noutput_path: b.jsonl\nmode_proportions: {exact: -1, max: 1}\n", "share of 'exact'"),
        ("traces_path: a\noutput_path: b.jsonl\nmode_proportions: {exact: lots}\n", "share of 'exact'"),
        ("traces_path: a\noutput_path: b.jsonl\nmode_proportions: {often: 1}\n", "unknown mode\\(s\\) \\['often'\\]"),
    ],
)
def test_bad_recipes_are_named(tmp_path, text, message):
    recipe = write(tmp_path / "bad.yaml", text)
    with pytest.raises(StageInputError, match=message):
        parse_compress("--config", str(recipe))


def test_yaml_merge_keys_may_be_overridden(tmp_path):
    recipe = write(
        tmp_path / "merge.yaml",
        "base: &base {exact: 1, max: 1}\ntraces_path: a\noutput_path: b.jsonl\n"
        "mode_proportions: {<<: *base, max: 3}\n",
    )
    assert read_yaml(recipe)["mode_proportions"] == {"exact": 1, "max": 3}


def test_a_missing_recipe_is_named(tmp_path):
    with pytest.raises(StageInputError, match="no_such.yaml' does not exist"):
        parse_compress("--config", str(tmp_path / "no_such.yaml"))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["compress", "--config", "missing.yaml"], "cotx-rl compress: Recipe 'missing.yaml' does not exist."),
        (["grpo", "--config", "broken.yaml"], "cotx-rl grpo: Recipe 'broken.yaml' line 2, column 1 is not valid YAML"),
        (["eval", "--config", "typo.yaml"], "cotx-rl eval: Recipe 'typo.yaml': unknown key 'test_pth'"),
    ],
)
def test_the_cli_says_one_line_and_exits_2(tmp_path, argv, message):
    write(tmp_path / "broken.yaml", "sft_model_path: [a\n")
    write(tmp_path / "typo.yaml", "test_pth: t.jsonl\noutput_dir: out\n")
    done = subprocess.run([sys.executable, "-m", "cotx_rl.cli", *argv], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(message), done.stderr


def test_the_pipeline_passes_run_level_settings_to_every_stage(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    for seed in (0, 1):
        root = tmp_path / f"seed{seed}"
        args = pipeline.make_parser().parse_args_and_config(
            ["--config", "recipes/tiny/pipeline.yaml", "--output_root", str(root), "--seed", str(seed),
             "--until", "problems"]
        )  # fmt: skip
        pipeline.main(*args)
        assert (root / ".done" / "problems").exists()
    first, second = (read_rows(tmp_path / f"seed{s}" / "problems" / "test.jsonl") for s in (0, 1))
    assert len(first) == len(second) == 300
    assert [r["question"] for r in first] != [r["question"] for r in second]


def test_wandb_without_a_route_to_its_server_goes_offline_at_once(tmp_path, monkeypatch, caplog):
    from cotx_rl.tracking import configure_wandb

    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_DIR", raising=False)
    caplog.set_level("WARNING", logger="cotx_rl")
    assert configure_wandb(["wandb"], tmp_path) is True
    assert os.environ["WANDB_MODE"] == "offline"
    assert f"127.0.0.1:{port} is unreachable" in caplog.text
    monkeypatch.delenv("WANDB_MODE")
    assert configure_wandb("none", tmp_path) is False and "WANDB_MODE" not in os.environ


@pytest.fixture
def http_server():
    """A local HTTP server that answers every request with the status in `statuses[0]` and records the paths."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    state = {"statuses": [426], "paths": []}

    class Answer(BaseHTTPRequestHandler):
        def answer(self):
            state["paths"].append(self.path)
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(state["statuses"][0])
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_POST = answer

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", state
    server.shutdown()


def test_wandb_behind_a_server_that_does_not_answer_as_wandb_goes_offline(http_server, tmp_path, monkeypatch, caplog):
    # A proxy or a wrong WANDB_BASE_URL: a TCP connection opens, and W&B then retried for about 100 s and failed
    # the stage with a CommError traceback.
    from cotx_rl.tracking import configure_wandb

    url, state = http_server
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", url)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_DIR", raising=False)
    caplog.set_level("WARNING", logger="cotx_rl")
    assert configure_wandb("wandb", tmp_path) is True
    assert os.environ["WANDB_MODE"] == "offline"
    assert f"{url}/graphql answered HTTP 426, not as W&B's API" in caplog.text
    # W&B's API answering (here: 401 to a request without the key) keeps the run online.
    state["statuses"] = [401]
    monkeypatch.delenv("WANDB_MODE")
    assert configure_wandb("wandb", tmp_path) is True
    assert "WANDB_MODE" not in os.environ
    assert state["paths"] == ["/graphql", "/graphql"]
