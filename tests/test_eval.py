"""The eval stage on tiny (untrained) students: report schema, plots, tables, the completions, baselines."""

import json
import sys
import types
from collections import Counter
from pathlib import Path

import pytest
import torch

from cotx_rl import eval as evaluate
from cotx_rl.arithmetic import make_problems
from cotx_rl.config import RunArguments
from cotx_rl.eval import COMPLETION_COLUMNS, EvalArguments
from cotx_rl.generation import ForceCloseThought, Generation, ThoughtLimit, generate
from cotx_rl.io import StageInputError, read_rows, write_rows
from cotx_rl.tiny import build_tiny_student, build_tiny_tokenizer
from rewards.metrics import Outcome, auto_summary, budget_summary, percentile

BUDGET_KEYS = {"accuracy", "mean_thinking_tokens", "mean_abs_rel_error", "mean_signed_rel_error", "in_budget_rate",
               "p90_overshoot", "cut_off_rate", "wrong_rate", "num_scored", "num_unscored", "mean_completion_tokens"}  # fmt: skip


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


class FakeWandb(types.ModuleType):
    """Stands in for `wandb` in the eval stage: keeps what is logged."""

    def __init__(self):
        super().__init__("wandb")
        self.logged: list[dict] = []

    def init(self, **kwargs):
        return types.SimpleNamespace(log=self.logged.append, summary={}, finish=lambda: None)

    class Table:
        def __init__(self, columns, data):
            self.columns, self.data = columns, data

    class Image:
        def __init__(self, path):
            self.path = path


@pytest.fixture(scope="module")
def evaluated(students, tmp_path_factory):
    """One evaluation of the three tiny students (12 problems, budgets 8 and 16), logged to a fake W&B."""
    folder, paths = students
    output = tmp_path_factory.mktemp("eval")
    fake = FakeWandb()
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "wandb", fake)
        patch.setenv("WANDB_MODE", "offline")
        patch.setenv("WANDB_DIR", str(output))
        args = EvalArguments(test_path=str(folder / "test.jsonl"), output_dir=str(output), models=paths,
                             max_new_tokens=24, batch_size=8, report_to="wandb")  # fmt: skip
        report = evaluate.main(args, RunArguments(budget_grid=[8, 16]))
    return report, output, fake


def test_report_schema_table_and_plots(evaluated):
    report, tmp_path, _ = evaluated
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
    assert "wrong (the model ended its answer) / cut off" in table
    for plot in ("pareto.png", "budget_fidelity.png", "auto_by_difficulty.png"):
        assert (tmp_path / plot).read_bytes()[:4] == b"\x89PNG"


# One run per model, mode and budget: a budget student has exact and max at each budget, auto and unbudgeted; the
# full-CoT student is unbudgeted only; the truncation baseline is one run per budget (reported under exact and max).
EXPECTED_RUNS = (
    {("full_cot", None, None), ("truncation", None, 8), ("truncation", None, 16)}
    | {(name, mode, budget) for name in ("sft", "grpo") for mode in ("exact", "max") for budget in (8, 16)}
    | {(name, mode, None) for name in ("sft", "grpo") for mode in ("auto", None)}
)


def test_completions_jsonl_holds_every_completion(evaluated, students):
    report, output, _ = evaluated
    rows = read_rows(output / "completions.jsonl")
    problems = read_rows(students[0] / "test.jsonl")
    runs = Counter((row["model"], row["mode"], row["budget_tokens"]) for row in rows)
    assert set(runs) == EXPECTED_RUNS and set(runs.values()) == {len(problems)}
    assert len(rows) == len(problems) * len(EXPECTED_RUNS) == 12 * 15
    assert (report["num_completions"], report["num_runs"]) == (len(rows), len(EXPECTED_RUNS))
    assert all(list(row) == list(COMPLETION_COLUMNS) for row in rows)
    gold = {p["id"]: p["answer"] for p in problems}
    assert all(row["gold"] == gold[row["id"]] and row["question"] for row in rows)
    # The report's figures are those of the rows.
    for name, mode, budget in [("sft", "exact", 8), ("grpo", "max", 16), ("truncation", None, 8)]:
        cell = [r for r in rows if (r["model"], r["mode"], r["budget_tokens"]) == (name, mode, budget)]
        entry = report["models"][name]["exact" if mode is None else mode][str(budget)]
        assert entry["accuracy"] == pytest.approx(sum(r["correct"] for r in cell) / len(cell), abs=1e-4)
        assert entry["cut_off_rate"] == pytest.approx(sum(r["cut_off"] for r in cell) / len(cell), abs=1e-4)
        assert entry["mean_completion_tokens"] == pytest.approx(
            sum(r["completion_tokens"] for r in cell) / len(cell), abs=1e-4
        )
        assert entry["mean_thinking_tokens"] == pytest.approx(
            sum(r["thinking_tokens"] for r in cell) / len(cell), abs=1e-4
        )
    # The truncation baseline: every thought at most N, its answer capped (cut off unless it stopped by itself).
    for row in rows:
        if row["model"] == "truncation":
            assert row["thinking_tokens"] <= row["budget_tokens"]
            assert row["cut_off"] == (not row["correct"] and row["finish_reason"] in ("length", "answer_cap"))


def test_completions_are_logged_as_a_wandb_table(evaluated):
    _, output, fake = evaluated
    tables = [entry["eval/completions"] for entry in fake.logged if "eval/completions" in entry]
    assert len(tables) == 1 and tables[0].columns == list(COMPLETION_COLUMNS)
    rows = read_rows(output / "completions.jsonl")
    assert [dict(zip(tables[0].columns, values)) for values in tables[0].data] == rows


def load_domain_benchmark():
    import importlib.util

    spec = importlib.util.spec_from_file_location("domain", Path(__file__).parents[1] / "benchmarks" / "domain.py")
    domain = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(domain)
    return domain


def test_domain_benchmark_scores_each_level_from_the_students_completions(students):
    """`benchmarks/domain.py` (the README's reasoning-length check) runs on eval's `Student`, as eval does."""
    domain = load_domain_benchmark()
    folder, paths = students
    rows = read_rows(folder / "test.jsonl")
    settings = EvalArguments(test_path="-", output_dir=str(folder), models={"sft": "-"}, max_new_tokens=24)
    student = evaluate.Student("sft", paths["sft"], settings, RunArguments(budget_grid=[8, 16]))
    scores = domain.accuracy_by_level(student, rows, "max", 16)
    assert list(scores) == sorted({row["difficulty"] for row in rows})
    assert len(student.records) == len(rows) and {r["mode"] for r in student.records} == {"max"}
    for level, score in scores.items():
        correct = [r["correct"] for r in student.records if r["difficulty"] == level]
        assert score == pytest.approx(100 * sum(correct) / len(correct))


def test_domain_benchmark_trains_its_answer_only_student_through_the_sft_stage(students, tmp_path, monkeypatch):
    """The answer-only student of `benchmarks/domain.py`: the run's kept traces with the fixed thought, one epoch of
    the full-CoT recipe from the run's SFT student, saved where the benchmark evaluates it."""
    import shutil

    from cotx_rl.teachers.procedural import ProceduralTeacher

    domain = load_domain_benchmark()
    _, paths = students
    run_dir = tmp_path / "run"
    shutil.copytree(paths["sft"], run_dir / "sft")
    rows = make_problems(8, "train", seed=3)
    outputs = ProceduralTeacher().generate(rows)
    write_rows(run_dir / "kept_traces.jsonl", [{**r, "reasoning": o.reasoning, "response": o.response}
                                               for r, o in zip(rows, outputs)])  # fmt: skip
    monkeypatch.chdir(Path(__file__).parents[1])  # the benchmark names its recipe from the repository root
    output, seconds = domain.train_answer_only(run_dir, epochs=1)
    assert (output / "model.safetensors").is_file() and seconds > 0
    trained = read_rows(run_dir / "benchmark" / "answer_only.jsonl")
    assert len(trained) == 8 and {row["reasoning"] for row in trained} == {domain.ANSWER_ONLY_THOUGHT}


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
    generations = generate(model, tiny_tokenizer, ["Compute 2 + 3."] * 3, max_new_tokens=30, limit=ThoughtLimit(7, 4))
    for generation in generations:
        token_ids = generation.token_ids
        assert generation.hard_stopped and generation.finish_reason == "answer_cap"
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


class ScriptedGenerator:
    """Stands in for the eval stage's generator: answers each question with a completion scripted for it."""

    scripts: dict = {}

    def __init__(self, path, **kwargs):
        self.tokenizer = build_tiny_tokenizer()

    def complete(self, prompts, limit=None, desc=""):
        return [ScriptedGenerator.scripts[prompt.split("\n")[0]] for prompt in prompts]


def test_unreadable_golds_are_left_out_and_cut_offs_counted_apart(tmp_path, monkeypatch):
    rows = [
        {"id": "right", "question": "Compute 2 + 3.", "answer": "5"},
        {"id": "null-gold", "question": "Compute 1 + 1.", "answer": None},
        {"id": "cut", "question": "Compute 3 + 4.", "answer": "7"},
        {"id": "empty-gold", "question": "Compute 4 + 4.", "answer": ""},
        {"id": "wrong", "question": "Compute 4 + 5.", "answer": "9"},
    ]
    write_rows(tmp_path / "test.jsonl", rows)
    ScriptedGenerator.scripts = {
        "Compute 2 + 3.": Generation("<think>\nso\n</think>\n\\boxed{5}", [], False, "stop"),
        "Compute 1 + 1.": Generation("<think>\nso\n</think>\n\\boxed{2}", [], False, "stop"),
        "Compute 3 + 4.": Generation("<think>\nso so so so", [], False, "length"),
        "Compute 4 + 4.": Generation("<think>\nso\n</think>\n\\boxed{8}", [], False, "stop"),
        "Compute 4 + 5.": Generation("<think>\nso\n</think>\n\\boxed{4}", [], False, "stop"),
    }
    monkeypatch.setattr(evaluate, "BudgetedGenerator", ScriptedGenerator)
    (tmp_path / "sft").mkdir()
    (tmp_path / "sft" / "config.json").write_text("{}\n")  # a model folder to the checks; the script loads nothing
    args = EvalArguments(test_path=str(tmp_path / "test.jsonl"), output_dir=str(tmp_path / "out"),
                         models={"sft": str(tmp_path / "sft")}, modes=["max"])  # fmt: skip
    report = evaluate.main(args, RunArguments(budget_grid=[8]))
    cell = report["models"]["sft"]["max"]["8"]
    # Three problems can be scored: one right, one cut off by max_new_tokens, one wrong.
    assert (cell["accuracy"], cell["cut_off_rate"], cell["wrong_rate"]) == (0.3333, 0.3333, 0.3333)
    assert (cell["num_scored"], cell["num_unscored"], report["num_unscored"]) == (3, 2, 2)
    completions = {row["id"]: row for row in read_rows(tmp_path / "out" / "completions.jsonl")}
    assert completions["null-gold"]["correct"] is None and completions["empty-gold"]["correct"] is None
    assert completions["cut"]["cut_off"] and not completions["wrong"]["cut_off"]
    table = (tmp_path / "out" / "report.md").read_text()
    assert "| sft | max | 33.3% / 33.3% |" in table and "2 problem(s) without a readable gold" in table


def test_duplicate_ids_are_refused(tmp_path):
    problems = [{"id": i, "question": "Compute 2 + 3.", "answer": "5"} for i in ("a", "b", "a")]
    write_rows(tmp_path / "test.jsonl", problems)
    args = EvalArguments(test_path=str(tmp_path / "test.jsonl"), output_dir=str(tmp_path / "out"),
                         models={"sft": str(tmp_path)})  # fmt: skip
    with pytest.raises(StageInputError, match=r"test.jsonl' repeats id 'a' on lines 1 and 3"):
        evaluate.main(args)


def test_unwritable_output_dir_fails_before_evaluating(students, tmp_path, monkeypatch):
    folder, paths = students
    (tmp_path / "taken").write_text("a file, not a folder\n")

    def no_evaluation(*args, **kwargs):
        raise AssertionError("evaluation started before the output folder was checked")

    monkeypatch.setattr(evaluate, "Student", no_evaluation)
    args = EvalArguments(test_path=str(folder / "test.jsonl"), output_dir=str(tmp_path / "taken" / "eval"),
                         models={"sft": paths["sft"]})  # fmt: skip
    with pytest.raises(StageInputError, match="taken' is a file where a folder should be"):
        evaluate.main(args)


def test_eval_reads_math500_by_preset(shared_data, tmp_path, monkeypatch):
    raw = [json.loads(line) for line in (shared_data / "math500_test.jsonl").read_text().splitlines()[:4]]
    ScriptedGenerator.scripts = {
        r["problem"].split("\n")[0]: Generation(f"<think>\nso\n</think>\n\\boxed{{{r['answer']}}}", [], False, "stop")
        for r in raw
    }
    monkeypatch.setattr(evaluate, "BudgetedGenerator", ScriptedGenerator)
    (tmp_path / "grpo").mkdir()
    (tmp_path / "grpo" / "config.json").write_text("{}\n")  # a model folder to the checks; the script loads nothing
    args = EvalArguments(test_path=str(shared_data / "math500_test.jsonl"), preset="math", limit=4,
                         output_dir=str(tmp_path / "out"), models={"grpo": str(tmp_path / "grpo")}, modes=["auto"])  # fmt: skip
    report = evaluate.main(args, RunArguments(budget_grid=[256]))
    assert report["num_problems"] == 4 and report["models"]["grpo"]["auto"]["accuracy"] == 1.0
    rows = read_rows(tmp_path / "out" / "completions.jsonl")
    assert [(r["id"], r["gold"]) for r in rows] == [(r["unique_id"], r["answer"]) for r in raw]


def test_eval_of_a_student_with_a_real_tokenizer_by_preset(shared_data, tmp_path):
    """A random model with the real Qwen2.5-Instruct tokenizer and chat template, on GSM8K read by its preset."""
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from cotx_rl.models import add_budget_markers

    tokenizer = AutoTokenizer.from_pretrained(shared_data / "real" / "tokenizers" / "qwen2.5-instruct")
    add_budget_markers(tokenizer)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True)  # fmt: skip
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(tmp_path / "student")
    tokenizer.save_pretrained(tmp_path / "student")
    args = EvalArguments(test_path=str(shared_data / "gsm8k_test.jsonl"), preset="gsm8k", limit=2,
                         output_dir=str(tmp_path / "out"), models={"grpo": str(tmp_path / "student")},
                         modes=["max", "auto"], max_new_tokens=8, engine="transformers")  # fmt: skip
    report = evaluate.main(args, RunArguments(budget_grid=[4], answer_tokens=4))
    rows = read_rows(tmp_path / "out" / "completions.jsonl")
    assert len(rows) == 2 * 2 and {(r["mode"], r["budget_tokens"]) for r in rows} == {("max", 4), ("auto", None)}
    assert [r["gold"] for r in rows[:2]] == ["18", "3"]  # after `#### ` in the GSM8K solutions
    assert report["models"]["grpo"]["max"]["4"]["num_scored"] == 2
