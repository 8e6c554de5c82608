"""The sft and grpo stages as real runs: a GRPO run killed mid-training and resumed, and both phases on 2 processes.

Subprocesses run with one torch thread each: on a 2-core machine, more threads than cores make every tiny op wait for
a descheduled peer, and the runs crawl.
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cotx_rl import grpo, sft

REPO = Path(__file__).resolve().parents[1]
TINY = ["--student_hidden_size", "32", "--student_num_layers", "1", "--student_num_heads", "2"]
CPU = ["--use_cpu", "true", "--bf16", "false", "--gradient_checkpointing", "false", "--report_to", "none"]


def stage_env() -> dict:
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "WANDB_MODE": "offline",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(REPO),
        # Under CI, transformers also propagates its lines to the root logger: set it everywhere
        # so that a stage which printed every trainer line twice fails here too.
        "CI": "true",
    }


def sft_argv(data: Path, output: Path, *extra) -> list[str]:
    return [
        "--dataset_path", str(data / "examples.jsonl"), "--model_name_or_path", "embedded", "--output_dir", str(output),
        "--max_steps", "3", "--per_device_train_batch_size", "8", "--learning_rate", "1e-3", "--logging_steps", "1",
        "--save_strategy", "no", "--max_length", "192", *TINY, *CPU, *extra,
    ]  # fmt: skip


def grpo_argv(data: Path, sft_dir: Path, output: Path, *extra) -> list[str]:
    return [
        "--sft_model_path", str(sft_dir), "--problems_path", str(data / "problems.jsonl"), "--output_dir", str(output),
        "--per_device_train_batch_size", "8", "--num_generations", "4", "--max_completion_length", "112",
        "--logging_steps", "1", "--learning_rate", "1e-4", *CPU, *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def sft_model(tiny_training_data, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("sft")
    sft.main(*sft.make_parser().parse_args_and_config(sft_argv(tiny_training_data, output)))
    return output


def complete_checkpoints(output: Path) -> list[int]:
    """Steps of the checkpoints that are fully written (the trainer writes `trainer_state.json` last)."""
    steps = []
    for folder in output.glob("checkpoint-*"):
        if (folder / "trainer_state.json").exists() and (folder / "optimizer.pt").exists():
            steps.append(int(folder.name.split("-")[1]))
    return sorted(steps)


@pytest.mark.slow
def test_grpo_killed_after_a_checkpoint_resumes_where_it_stopped(tiny_training_data, sft_model, tmp_path, monkeypatch):
    from transformers import TrainerCallback
    from trl import GRPOTrainer

    output = tmp_path / "grpo"
    argv = grpo_argv(tiny_training_data, sft_model, output,
                     "--max_steps", "6", "--save_strategy", "steps", "--save_steps", "2")  # fmt: skip
    log = tmp_path / "grpo.log"
    # A file, not a pipe: nobody reads a pipe while polling, and a full one would stall the run.
    with log.open("wb") as sink:
        # Own session: the kill reaches the stage and any reward workers it started, and nothing else.
        process = subprocess.Popen([sys.executable, "-m", "cotx_rl.grpo", *argv], cwd=tmp_path, env=stage_env(),
                                   stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + 90
        while not complete_checkpoints(output) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):  # it may have ended on its own; the asserts say how
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    log_text = log.read_text(errors="replace")
    assert process.returncode == -signal.SIGKILL, log_text[-3000:]
    saved = complete_checkpoints(output)
    assert saved and max(saved) < 6, log_text[-3000:]
    assert not (output / "model.safetensors").exists()  # the run never reached its final save
    checkpoint = max(saved)
    saved_optimizer = torch.load(output / f"checkpoint-{checkpoint}" / "optimizer.pt", weights_only=True)
    assert {int(s["step"]) for s in saved_optimizer["state"].values()} == {checkpoint}
    # A kill in the middle of the next save leaves a checkpoint folder without its trainer state: skipped on resume.
    torn = output / f"checkpoint-{checkpoint + 2}"
    torn.mkdir(exist_ok=True)
    (torn / "model.safetensors").write_bytes(b"")

    steps_run = []

    class StepRecorder(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            steps_run.append(state.global_step)

    train = GRPOTrainer.train

    def train_with_recorder(self, *args, **kwargs):
        self.add_callback(StepRecorder())
        return train(self, *args, **kwargs)

    # `grpo.main` takes no callbacks; the stage's own `train` call gets one added on its way in.
    monkeypatch.setattr(GRPOTrainer, "train", train_with_recorder)
    trainer = grpo.main(*grpo.make_parser().parse_args_and_config([*argv, "--resume_from_checkpoint", "true"]))

    assert trainer.state.global_step == 6
    # This process ran only the steps after the checkpoint, numbered on from it.
    assert steps_run == list(range(checkpoint + 1, 7))
    # AdamW counts every step it has taken: restored, it counts the killed run's steps too.
    optimizer = getattr(trainer.optimizer, "optimizer", trainer.optimizer)
    assert {int(s["step"]) for s in optimizer.state.values()} == {6}
    logged_steps = [entry["step"] for entry in trainer.state.log_history if "loss" in entry]
    assert logged_steps == list(range(1, 7))  # the killed run's log, restored, then this run's
    assert (output / "model.safetensors").exists() and (output / "tokenizer.json").exists()


def launch(stage: str, argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               str(REPO / "recipes" / "accelerate" / "cpu2.yaml"), "-m", f"cotx_rl.{stage}", *argv]  # fmt: skip
    return subprocess.run(command, cwd=cwd, env=stage_env(), capture_output=True, text=True, timeout=300)


def batch_size_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if "Total train batch size (w. parallel, distributed" in line]


@pytest.mark.slow
def test_both_phases_train_on_two_processes(tiny_training_data, tmp_path):
    # Each rank logs the trainer's opening summary, whose total batch counts every process.
    logs = ["--log_level", "info", "--log_level_replica", "info"]
    sft_dir, grpo_dir = tmp_path / "sft", tmp_path / "grpo"
    argv = sft_argv(tiny_training_data, sft_dir, "--per_device_train_batch_size", "4", "--save_strategy", "steps",
                    "--save_steps", "3", *logs)  # fmt: skip
    sft_run = launch("sft", argv, tmp_path)
    assert sft_run.returncode == 0, sft_run.stderr[-5000:]
    lines = batch_size_lines(sft_run.stderr + sft_run.stdout)
    assert len(lines) == 2 and all(line.endswith("= 8") for line in lines), lines
    assert json.loads((sft_dir / "checkpoint-3" / "trainer_state.json").read_text())["global_step"] == 3
    assert (sft_dir / "model.safetensors").exists() and (sft_dir / "tokenizer.json").exists()

    # 2 processes x 4 completions = 8, two groups of num_generations=4 per step.
    argv = grpo_argv(tiny_training_data, sft_dir, grpo_dir, "--per_device_train_batch_size", "4", "--max_steps", "2",
                     "--save_strategy", "steps", "--save_steps", "2", *logs)  # fmt: skip
    grpo_run = launch("grpo", argv, tmp_path)
    assert grpo_run.returncode == 0, grpo_run.stderr[-5000:]
    lines = batch_size_lines(grpo_run.stderr + grpo_run.stdout)
    assert len(lines) == 2 and all(line.endswith("= 8") for line in lines), lines
    state = json.loads((grpo_dir / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    assert [entry["step"] for entry in state["log_history"] if "loss" in entry] == [1, 2]
    assert (grpo_dir / "model.safetensors").exists() and (grpo_dir / "tokenizer.json").exists()
