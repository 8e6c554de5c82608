"""One-way layers: the budget format at the bottom, `rewards` on it alone, the stages on top; and the budget rewards
named on TRL's own command line (`trl grpo --reward_funcs rewards.composite_reward`)."""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BUDGET_FORMAT = {"cotx_rl", "cotx_rl.budget"}


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", sorted((REPO / "rewards").glob("*.py")), ids=lambda p: p.name)
def test_rewards_import_nothing_of_cotx_rl_but_the_budget_format(path):
    # Every import, also the ones inside functions: a lazy import is still a dependency.
    upward = {name for name in imported_modules(path) if name.split(".")[0] == "cotx_rl"} - BUDGET_FORMAT
    assert not upward, f"{path.name} imports {sorted(upward)}"


def test_importing_rewards_loads_only_the_budget_format():
    code = "import sys, rewards; print(sorted(m for m in sys.modules if m.split('.')[0] == 'cotx_rl'))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    assert set(json.loads(done.stdout.replace("'", '"'))) <= BUDGET_FORMAT


def test_the_budget_format_imports_no_other_layer():
    upward = {n for n in imported_modules(REPO / "cotx_rl" / "budget.py") if n.split(".")[0] in ("cotx_rl", "rewards")}
    assert not upward


def test_exported_rewards_take_the_tokenizer_from_the_environment(tiny_tokenizer, tmp_path, monkeypatch):
    import rewards
    from cotx_rl.budget import render_completion

    tiny_tokenizer.save_pretrained(tmp_path / "student")
    completion = render_completion(" ".join(["one"] * 24), "\\boxed{5}")
    monkeypatch.delenv("COTX_RL_TOKENIZER", raising=False)
    bare = rewards.BudgetFidelityReward()
    with pytest.raises(ValueError, match="COTX_RL_TOKENIZER"):
        bare([completion], budget_mode=["exact"], budget_tokens=[24])
    monkeypatch.setenv("COTX_RL_TOKENIZER", str(tmp_path / "student"))
    # The ready-made instances are what `--reward_funcs rewards.composite_reward` imports.
    for reward in (rewards.BudgetFidelityReward(), rewards.CompositeReward()):
        scores = reward([completion], answer=["5"], budget_mode=["exact"], budget_tokens=[24])
        assert scores == [pytest.approx(1.0, abs=0.1)], type(reward).__name__


@pytest.mark.slow
def test_trl_grpo_script_trains_with_rewards_named_by_dotted_path(tiny_tokenizer, tmp_path):
    """TRL's own `trl grpo` command imports our rewards by dotted path, as it would any user's."""
    from cotx_rl.arithmetic import make_problems
    from cotx_rl.chat import prompt_messages
    from cotx_rl.io import write_rows
    from cotx_rl.models import add_budget_markers
    from cotx_rl.tiny import build_tiny_student

    student = tmp_path / "student"
    add_budget_markers(tiny_tokenizer)
    build_tiny_student(tiny_tokenizer, hidden_size=32, num_layers=1, num_heads=2).save_pretrained(student)
    tiny_tokenizer.save_pretrained(student)
    modes = [("exact", 24), ("max", 48), ("auto", None)]
    rows = [
        {"prompt": prompt_messages(p["question"], mode, budget), "answer": p["answer"], "budget_mode": mode,
         "budget_tokens": budget}
        for p, (mode, budget) in zip(make_problems(12, "train", seed=3), modes * 4)
    ]  # fmt: skip
    write_rows(tmp_path / "data" / "train.jsonl", rows)
    env = {**os.environ, "COTX_RL_TOKENIZER": str(student), "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled"}
    command = [
        "trl", "grpo", "--model_name_or_path", str(student), "--dataset_name", str(tmp_path / "data"),
        "--reward_funcs", "rewards.composite_reward", "rewards.format_reward", "--output_dir", str(tmp_path / "out"),
        "--max_steps", "2", "--per_device_train_batch_size", "6", "--num_generations", "3",
        "--max_completion_length", "32", "--logging_steps", "1", "--save_strategy", "steps", "--save_steps", "2",
        "--report_to", "none",
        "--use_cpu", "true", "--bf16", "false", "--gradient_checkpointing", "false",
    ]  # fmt: skip
    done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    state = json.loads(next((tmp_path / "out").rglob("trainer_state.json")).read_text())
    logged = {key for entry in state["log_history"] for key in entry}
    assert state["global_step"] == 2
    assert {"rewards/composite_reward/mean", "rewards/format_reward/mean"} <= logged, sorted(logged)
    assert any(key.startswith("budget/") for key in logged), sorted(logged)
