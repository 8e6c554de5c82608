"""The eval stage on tiny (untrained) students: report schema, plots, table, truncation baseline."""

import json

import pytest
import torch

from cotx_rl import eval as evaluate
from cotx_rl.arithmetic import make_problems
from cotx_rl.config import RunArguments
from cotx_rl.eval import EvalArguments
from cotx_rl.generation import ForceCloseThought, generate
from cotx_rl.io import StageInputError, write_rows
from cotx_rl.tiny import build_tiny_student
from rewards.metrics import Outcome, auto_summary, budget_summary, percentile

BUDGET_KEYS = {"accuracy", "mean_thinking_tokens", "mean_abs_rel_error", "mean_signed_rel_error", "in_budget_rate",
               "p90_overshoot"}  # fmt: skip


@pytest.fixture(scope="module")
def students(tmp_path_factory, tiny_tokenizer):
    folder = tmp_path_factory.mktemp("students")
    paths = {}
    for seed, name in enumerate(("full_cot", "sft", "grpo")):
        model = build_tiny_student(tiny_tokenizer, seed=seed, hidden_size=32, num_layers=1, num_heads=2,
                                   initializer_range=0.5)  # fmt: skip
        model.save_pretrained(folder / name)
        tiny_tokenizer.save_pretrained(folder / name)
        paths[name] = str(folder / name)
    write_rows(folder / "test.jsonl", make_problems(12, "test", seed=0))
    return folder, paths


def test_report_schema_table_and_plots(students, tmp_path):
    folder, paths = students
    args = EvalArguments(test_path=str(folder / "test.jsonl"), output_dir=str(tmp_path), models=paths,
                         max_new_tokens=24, batch_size=8)  # fmt: skip
    report = evaluate.main(args, RunArguments(budget_grid=[8, 16]))
    assert report == json.loads((tmp_path / "report.json").read_text())
    models = report["models"]
    assert set(models) == {"full_cot", "truncation", "sft", "grpo"}
    assert set(models["full_cot"]) == {"unbudgeted"}
    assert set(models["truncation"]) == {"exact", "max"}
    for name in ("sft", "grpo"):
        assert set(models[name]) == {"exact", "max", "auto", "unbudgeted"}
        for mode in ("exact", "max"):
            assert set(models[name][mode]) == {"8", "16"}
            assert all(set(entry) == BUDGET_KEYS for entry in models[name][mode].values())
        auto = models[name]["auto"]
        assert {
            "accuracy",
            "mean_thinking_tokens",
            "mean_declared_budget",
            "mean_abs_rel_error",
            "by_difficulty",
        } <= set(auto)
        assert {"accuracy", "mean_thinking_tokens"} <= set(models[name]["unbudgeted"])
    for budget in ("8", "16"):
        # The truncation baseline never thinks longer than N.
        assert models["truncation"]["exact"][budget]["in_budget_rate"] == 1.0
    table = (tmp_path / "report.md").read_text()
    assert "| sft | exact |" in table and "| truncation | max |" in table
    for plot in ("pareto.png", "budget_fidelity.png", "auto_by_difficulty.png"):
        assert (tmp_path / plot).read_bytes()[:4] == b"\x89PNG"


def test_force_close_thought_caps_the_thought(students, tiny_tokenizer):
    _, paths = students
    from transformers import AutoModelForCausalLM

    start, end = tiny_tokenizer.convert_tokens_to_ids(["<think>", "</think>"])
    word = tiny_tokenizer.convert_tokens_to_ids("\u2581so")
    model = AutoModelForCausalLM.from_pretrained(paths["sft"])
    forward = model.forward

    def think_forever(input_ids=None, **kwargs):
        # A student that opens a thought at once and never closes it on its own: only the cap can end it.
        output = forward(input_ids=input_ids, **kwargs)
        logits = torch.full_like(output.logits, -1e4)
        opened = (input_ids == start).any(dim=1)
        logits[~opened, -1, start] = 0.0
        logits[opened, -1, word] = 0.0
        output.logits = logits
        return output

    model.forward = think_forever
    texts, ids = generate(
        model, tiny_tokenizer, ["Compute 2 + 3."] * 3, max_new_tokens=30, close_thought_at=7, max_answer_tokens=4
    )
    for token_ids in ids:
        assert token_ids[0] == start and end in token_ids, token_ids
        assert token_ids.index(end) - token_ids.index(start) - 1 == 7
        # 4 answer tokens after the close, then the forced end of sequence.
        assert len(token_ids) - token_ids.index(end) - 1 == 5 and token_ids[-1] == tiny_tokenizer.eos_token_id


def test_force_close_processor_unit():
    processor = ForceCloseThought(think_start_id=1, think_end_id=2, max_thinking_tokens=3, prompt_length=2)
    ids = torch.tensor([[9, 9, 1, 5, 5, 5], [9, 9, 1, 5, 2, 5], [9, 9, 5, 5, 5, 5]])
    scores = torch.zeros(3, 6)
    out = processor(ids, scores.clone())
    assert out[0].argmax() == 2 and out[0][0] == float("-inf")  # three thinking tokens: must close now
    assert torch.equal(out[1], torch.zeros(6)) and torch.equal(out[2], torch.zeros(6))
    # With an answer cap, what follows the closed thought ends (EOS = 0) after `max_answer_tokens` tokens.
    capped = ForceCloseThought(1, 2, 3, prompt_length=2, eos_token_id=0, max_answer_tokens=2)
    ids = torch.tensor([[9, 9, 1, 5, 2, 7, 7], [9, 9, 1, 5, 2, 7, 1]])[:, :6]
    out = capped(torch.cat([ids, torch.tensor([[7], [7]])], dim=1), torch.zeros(2, 10))
    assert out[0].argmax() == 0 and out[1].argmax() == 0
    out = capped(ids, torch.zeros(2, 10))
    assert torch.equal(out, torch.zeros(2, 10))  # one answer token so far: not yet


def test_metrics():
    outcomes = [Outcome(1.0, 10, 10), Outcome(0.0, 15, 10), Outcome(1.0, 5, 10), Outcome(0.0, 30, None)]
    summary = budget_summary(outcomes)
    assert summary["accuracy"] == 0.5 and summary["mean_thinking_tokens"] == 15
    assert summary["mean_abs_rel_error"] == pytest.approx((0 + 0.5 + 0.5 + 1.0) / 4)
    assert summary["mean_signed_rel_error"] == pytest.approx((0 + 0.5 - 0.5 + 1.0) / 4)
    assert summary["in_budget_rate"] == 0.5
    assert percentile([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 90) == 9
    auto = auto_summary([Outcome(1.0, 20, 24, 24, 1), Outcome(0.0, 50, 48, 48, 2), Outcome(1.0, 22, 24, 24, 1)])
    assert auto["by_difficulty"]["1"] == {
        "accuracy": 1.0,
        "mean_thinking_tokens": 21,
        "mean_declared_budget": 24,
        "count": 2,
    }
    assert auto["mean_declared_budget"] == 32


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"models": {}}, "at least one model"),
        ({"modes": ["exact", "sometimes"]}, "sometimes"),
        ({"engine": "jax"}, "jax"),
    ],
)
def test_bad_arguments(kwargs, message):
    settings = {"test_path": "t.jsonl", "output_dir": "o", "models": {"sft": "x"}} | kwargs
    with pytest.raises(StageInputError, match=message):
        EvalArguments(**settings)


def test_missing_model_path_fails_before_work(students, tmp_path):
    folder, paths = students
    args = EvalArguments(test_path=str(folder / "test.jsonl"), output_dir=str(tmp_path / "out"),
                         models={"sft": paths["sft"], "grpo": str(tmp_path / "no_grpo_here")})  # fmt: skip
    with pytest.raises(StageInputError, match="no_grpo_here"):
        evaluate.main(args)
    assert not (tmp_path / "out").exists()
