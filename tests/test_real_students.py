"""The shipped real-model recipes on tiny students of the real architectures, tokenizers and chat templates.

Each recipe runs with its own keys; only hardware keys (CPU, float32, no bf16, no gradient checkpointing, no W&B, no
vLLM where it would need a GPU) and size keys (steps, batch, lengths, budget grid) are overridden. The students are
random `Qwen2ForCausalLM`/`Qwen3ForCausalLM` models of hidden size 32 (see `real_students.py`), so nothing is
downloaded and a step takes a second.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from unittest import mock

import pytest
import torch
from real_students import REAL_STUDENTS, build_real_student

from cotx_rl import eval as evaluate
from cotx_rl import grpo, sft
from cotx_rl.budget import BUDGET_END, BUDGET_START, render_thinking
from cotx_rl.chat import opened_thought
from cotx_rl.io import StageInputError, read_rows, write_rows

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"
HARDWARE = ["--use_cpu", "true", "--bf16", "false", "--dtype", "float32", "--gradient_checkpointing", "false",
            "--report_to", "none", "--dataloader_num_workers", "0"]  # fmt: skip
# Every real recipe folder, with the students its recipes run on: each real tokenizer and template at least once.
RUNS = [
    ("qwen2.5-1.5b", "qwen2.5"),
    ("qwen2.5-1.5b", "qwen3"),
    ("deepseek-r1-distill-qwen-1.5b", "r1-distill"),
]
REAL_FOLDERS = sorted(p.name for p in RECIPES.iterdir() if p.is_dir() and p.name not in ("tiny", "accelerate"))


def test_every_real_recipe_folder_is_exercised():
    assert REAL_FOLDERS == sorted({folder for folder, _ in RUNS})


@pytest.fixture(scope="session")
def real_students(tmp_path_factory, shared_data) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("real_students")
    tokenizers = shared_data / "real" / "tokenizers"
    return {name: build_real_student(student, tokenizers, folder / name) for name, student in REAL_STUDENTS.items()}


def example_rows() -> list[dict]:
    """Eight SFT examples, the three modes taking turns, with a two-line reasoning."""
    rows = []
    for i in range(8):
        mode = ("exact", "max", "auto")[i % 3]
        rows.append({
            "id": f"p{i}", "question": f"What is {i} + 3?", "answer": str(i + 3), "budget_mode": mode,
            "budget_tokens": 24, "reasoning": f"We add {i} and 3, which gives {i + 3}.\nCheck: {i + 3} - 3 = {i}.",
            "response": f"The answer is \\boxed{{{i + 3}}}.",
        })  # fmt: skip
    return rows


@pytest.fixture(scope="session")
def real_data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("real_data")
    rows = example_rows()
    write_rows(folder / "examples.jsonl", rows)
    write_rows(folder / "exact_max.jsonl", [row for row in rows if row["budget_mode"] != "auto"])
    write_rows(folder / "problems.jsonl", [{k: row[k] for k in ("id", "question", "answer")} for row in rows])
    return folder


def run_stage(module, recipe: Path, *flags):
    """`cotx-rl <stage> --config recipe flags...` in this process, leaving no environment or accelerate state."""
    from accelerate.state import AcceleratorState

    with mock.patch.dict(os.environ):
        try:
            return module.main(*module.make_parser().parse_args_and_config(["--config", str(recipe), *flags]))
        finally:
            AcceleratorState._reset_state(reset_partial_state=True)


def sft_flags(data: Path, student: Path, output: Path, *extra) -> list[str]:
    return ["--dataset_path", str(data / "examples.jsonl"), "--model_name_or_path", str(student),
            "--output_dir", str(output), "--max_steps", "2", "--max_length", "1024",
            "--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "1", *HARDWARE, *extra]  # fmt: skip


class Pipeline:
    """One recipe folder run on one student: LoRA SFT, full SFT (the full-CoT recipe), GRPO, eval."""

    def __init__(self, folder: str, student: str, root: Path):
        self.folder, self.student, self.root = RECIPES / folder, student, root
        self.trainers: dict = {}

    def recipe(self, name: str) -> Path:
        return self.folder / f"{name}.yaml"


@pytest.fixture(scope="session")
def pipelines(tmp_path_factory, real_students, real_data) -> dict:
    """The SFT runs of every `RUNS` entry, kept for the tests that look at what they trained."""
    done = {}
    for folder, student in RUNS:
        pipeline = Pipeline(folder, student, tmp_path_factory.mktemp(f"{folder}-{student}"))
        pipeline.trainers["sft"] = run_stage(
            sft, pipeline.recipe("sft"), *sft_flags(real_data, real_students[student], pipeline.root / "sft")
        )
        done[folder, student] = pipeline
    return done


@pytest.mark.parametrize(("folder", "student"), RUNS, ids=lambda value: value)
def test_lora_sft_recipe_trains_and_keeps_the_reasoning(pipelines, real_data, folder, student):
    pipeline = pipelines[folder, student]
    trainer = pipeline.trainers["sft"]
    assert trainer.state.global_step == 2
    adapter = json.loads((pipeline.root / "sft" / "adapter_config.json").read_text())
    assert adapter["peft_type"] == "LORA" and adapter["trainable_token_indices"]
    tokenizer = trainer.processing_class
    opened = opened_thought(tokenizer)
    rows = {row["question"]: row for row in example_rows()}
    checked = set()
    for example in trainer.train_dataset:
        ids, mask = example["input_ids"], [label != -100 for label in example["labels"]]
        trained = opened + tokenizer.decode([t for t, m in zip(ids, mask) if m])
        prompt = tokenizer.decode([t for t, m in zip(ids, mask) if not m])
        (question,) = [q for q in rows if q in prompt]
        row = rows[question]
        # The thought, its reasoning, the answer and (auto) the declared budget are all trained on, in order.
        expected = render_thinking(row["reasoning"]) + "\n" + row["response"] + tokenizer.eos_token
        if row["budget_mode"] == "auto":
            expected = f"{BUDGET_START}24{BUDGET_END}\n" + expected
        assert trained == expected, (row["budget_mode"], trained)
        assert prompt.count(tokenizer.bos_token or "\0") <= 1  # never a second BOS
        checked.add(row["budget_mode"])
    assert checked == {"exact", "max", "auto"}


@pytest.mark.parametrize(("folder", "student"), [("qwen2.5-1.5b", "qwen2.5"), ("deepseek-r1-distill-qwen-1.5b",
                         "r1-distill")], ids=["tied", "untied"])  # fmt: skip
def test_lora_trains_the_marker_rows_of_input_and_output_layers(pipelines, real_students, folder, student):
    from transformers import AutoModelForCausalLM

    from cotx_rl.models import load_for_inference, output_layer_is_tied

    pipeline = pipelines[folder, student]
    base = AutoModelForCausalLM.from_pretrained(real_students[student])
    trained, tokenizer = load_for_inference(str(pipeline.root / "sft"), "cpu", "float32")
    assert output_layer_is_tied(base) == REAL_STUDENTS[student].tied
    added = tokenizer.convert_tokens_to_ids([BUDGET_START, BUDGET_END])
    others = [0, 100, tokenizer.eos_token_id]
    for layer in ("get_input_embeddings", "get_output_embeddings"):
        before, after = getattr(base, layer)().weight, getattr(trained, layer)().weight
        assert not torch.equal(before[added], after[added]), layer  # the markers' rows moved
        assert torch.equal(before[others], after[others]), layer  # and only theirs


@pytest.mark.slow
@pytest.mark.parametrize(("folder", "student"), RUNS, ids=lambda value: value)
def test_full_sft_grpo_and_eval_recipes_run(pipelines, real_students, real_data, shared_data, folder, student):
    pipeline = pipelines[folder, student]
    root = pipeline.root
    # The full-CoT recipe, as a full fine-tune: its own keys but use_peft.
    full = run_stage(sft, pipeline.recipe("full_cot"),
                     *sft_flags(real_data, real_students[student], root / "full_cot", "--use_peft", "false"))  # fmt: skip
    assert full.state.global_step == 2 and (root / "full_cot" / "model.safetensors").is_file()
    # And as it ships: a LoRA adapter.
    shipped = run_stage(
        sft, pipeline.recipe("full_cot"), *sft_flags(real_data, real_students[student], root / "full_lora")
    )
    assert shipped.state.global_step == 2 and (root / "full_lora" / "adapter_model.safetensors").is_file()
    # GRPO continues the LoRA student; vLLM needs a GPU, so transformers generates here.
    sizes = ["--max_steps", "2", "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "1",
             "--num_generations", "2", "--max_completion_length", "40", "--budget_grid", "16", "32",
             "--answer_tokens", "8", "--use_vllm", "false", "--output_root", str(root)]  # fmt: skip
    trainer = run_stage(grpo, pipeline.recipe("grpo"), "--sft_model_path", str(root / "sft"),
                        "--problems_path", str(real_data / "problems.jsonl"), "--output_dir", str(root / "grpo"),
                        *sizes, *HARDWARE)  # fmt: skip
    assert trainer.state.global_step == 2
    assert any(key.startswith("rewards/composite_reward") for entry in trainer.state.log_history for key in entry)
    # Eval of every model the recipe names, with the transformers engine on the CPU.
    write_rows(root / "test.jsonl", [{"id": r["id"], "question": r["question"], "answer": r["answer"]}
                                     for r in example_rows()[:2]])  # fmt: skip
    models = {"full_cot": str(root / "full_cot"), "sft": str(root / "sft"), "grpo": str(root / "grpo")}
    run_stage(evaluate, pipeline.recipe("eval"), "--test_path", str(root / "test.jsonl"), "--output_dir",
              str(root / "eval"), "--models", json.dumps(models), "--engine", "transformers", "--device", "cpu",
              "--dtype", "float32", "--max_new_tokens", "12", "--batch_size", "2", "--budget_grid", "16", "32",
              "--answer_tokens", "8", "--report_to", "none", "--output_root", str(root))  # fmt: skip
    report = json.loads((root / "eval" / "report.json").read_text())
    assert {"full_cot", "sft", "grpo", "truncation"} <= set(report["models"])
    # The real problem sets by the recipes' presets, from the shared files instead of the Hub.
    problems = shared_data / "real" / "problems"
    for recipe, path in (
        ("eval_math500", problems / "math500_test.jsonl"),
        ("eval_aime", problems / "aime24_dynasor.jsonl"),
    ):
        golds = [json.loads(line)["answer"] for line in path.read_text().splitlines()[:2]]
        run_stage(evaluate, pipeline.recipe(recipe), "--test_path", str(path), "--limit", "2", "--output_dir",
                  str(root / recipe), "--models", json.dumps({"grpo": str(root / "grpo")}), "--engine", "transformers",
                  "--device", "cpu", "--dtype", "float32", "--max_new_tokens", "12", "--batch_size", "2",
                  "--budget_grid", "16", "32", "--answer_tokens", "8", "--report_to", "none", "--output_root", str(root))  # fmt: skip
        rows = read_rows(root / recipe / "completions.jsonl")
        # exact and max at both budgets, and auto: five runs of the two problems, their golds read by the preset.
        assert len(rows) == 2 * 5 and [str(row["gold"]) for row in rows[:2]] == [str(gold) for gold in golds]


def test_grpo_with_vllm_starts_from_the_merged_sft_student(pipelines, real_data, monkeypatch, tmp_path):
    """With `use_vllm`, the LoRA SFT student is merged into a plain model before GRPO: vLLM's weight sync cannot name
    PEFT's trainable-token weights. The recipe's LoRA keys start a new adapter on it."""
    import trl
    from peft import LoraConfig

    pipeline = pipelines["deepseek-r1-distill-qwen-1.5b", "r1-distill"]
    seen = {}

    class Stop(Exception):
        pass

    def fake_trainer(model=None, peft_config=None, **kwargs):
        seen.update(model=model, peft_config=peft_config)
        raise Stop

    monkeypatch.setattr(trl, "GRPOTrainer", fake_trainer)
    with pytest.raises(Stop):
        run_stage(grpo, pipeline.recipe("grpo"), "--sft_model_path", str(pipeline.root / "sft"), "--problems_path",
                  str(real_data / "problems.jsonl"), "--output_dir", str(tmp_path / "grpo"), "--budget_grid", "16",
                  "32", "--answer_tokens", "8", "--max_completion_length", "40", *HARDWARE)  # fmt: skip
    names = list(seen["model"].state_dict())
    assert type(seen["model"]).__name__ == "Qwen2ForCausalLM"
    assert not [name for name in names if "lora_" in name or "token_adapter" in name or "base_layer" in name]
    assert isinstance(seen["peft_config"], LoraConfig) and seen["peft_config"].r == 64
    assert (tmp_path / "grpo" / "merged" / "sft" / "config.json").is_file()


def test_a_template_that_opens_the_thought_trains_inside_it(real_students, real_data, tmp_path):
    """TRL's DeepSeek-R1-Distill training template (passed with `chat_template_path`) ends its generation prompt in
    `<think>\\n`: the completion then starts inside the thought, and an auto example, whose `<budget>` would have to
    come before `<think>`, stops the stage with one message."""
    import trl

    template = Path(trl.__file__).parent / "chat_templates" / "deepseek_r1_distill_training.jinja"
    student = real_students["r1-distill"]
    flags = ["--chat_template_path", str(template), "--use_peft", "false"]
    recipe = RECIPES / "deepseek-r1-distill-qwen-1.5b" / "sft.yaml"
    with pytest.raises(StageInputError, match="opens the thought in its generation prompt"):
        run_stage(sft, recipe, *sft_flags(real_data, student, tmp_path / "auto", *flags))
    trainer = run_stage(sft, recipe, *sft_flags(real_data, student, tmp_path / "exact", *flags, "--dataset_path",
                                                str(real_data / "exact_max.jsonl")))  # fmt: skip
    example = trainer.train_dataset[0]
    tokenizer = trainer.processing_class
    mask = [label != -100 for label in example["labels"]]
    prompt = tokenizer.decode([t for t, m in zip(example["input_ids"], mask) if not m])
    completion = tokenizer.decode([t for t, m in zip(example["input_ids"], mask) if m])
    assert prompt.endswith("<｜Assistant｜><think>\n") and not completion.startswith("<think>")
    assert "\n</think>\nThe answer is \\boxed{" in completion


def test_r1_recipe_trains_auto_on_a_student_with_the_hubs_current_template(real_students, real_data, tmp_path):
    """The Hub's DeepSeek-R1-Distill template (since 2025-02-09) opens `<think>` in its generation prompt, which leaves
    auto mode no room for `<budget>`: the recipe trains with its own (January 2025) template instead, and saves it."""
    import shutil

    from transformers import AutoTokenizer

    student = tmp_path / "r1-current-template"
    shutil.copytree(real_students["r1-distill"], student)
    tokenizer = AutoTokenizer.from_pretrained(student)
    hub_ending = "{{'<｜Assistant｜><think>\\n'}}{% endif %}"
    tokenizer.chat_template = tokenizer.chat_template.replace("{{'<｜Assistant｜>'}}{% endif %}", hub_ending)
    tokenizer.save_pretrained(student)
    assert opened_thought(AutoTokenizer.from_pretrained(student)) == "<think>\n"  # the Hub's behaviour, reproduced
    recipe = RECIPES / "deepseek-r1-distill-qwen-1.5b" / "sft.yaml"
    trainer = run_stage(sft, recipe, *sft_flags(real_data, student, tmp_path / "sft"))
    assert trainer.state.global_step == 2
    saved = AutoTokenizer.from_pretrained(tmp_path / "sft")
    assert opened_thought(saved) == ""  # the recipe's template travels with the student to GRPO and eval
    trained = [trainer.processing_class.decode(example["input_ids"]) for example in trainer.train_dataset]
    assert any(f"{BUDGET_START}24{BUDGET_END}\n<think>" in text for text in trained)


def test_grpo_rewards_count_the_thought_the_prompt_opened(real_students):
    from transformers import AutoTokenizer

    import rewards
    from cotx_rl.grpo import GRPOScriptArguments, with_opened_thought

    tokenizer = AutoTokenizer.from_pretrained(real_students["r1-distill"])
    tokenizer.chat_template = tokenizer.chat_template.replace("{{'<｜Assistant｜>'}}{% endif %}",
                                                              "{{'<｜Assistant｜><think>\\n'}}{% endif %}")  # fmt: skip
    args = GRPOScriptArguments(sft_model_path="x", problems_path="x", mode_proportions={"exact": 1.0, "max": 1.0})
    (reward,) = with_opened_thought([rewards.load("format_reward")], tokenizer, args)
    completion = "one two three\n</think>\nThe answer is \\boxed{5}."
    ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    assert reward(prompts=[[]], completions=[completion], completion_ids=[ids], budget_mode=["exact"]) == [1.0]
    assert rewards.load("format_reward")(prompts=[[]], completions=[completion], completion_ids=[ids],
                                         budget_mode=["exact"]) == [0.0]  # fmt: skip
    auto = GRPOScriptArguments(sft_model_path="x", problems_path="x")
    with pytest.raises(StageInputError, match="auto"):
        with_opened_thought([rewards.load("format_reward")], tokenizer, auto)


def never_closing(tokenizer, declared: int | None = None):
    """A script: the student writes `<budget>declared</budget>` (auto) and `<think>`, then ` so` forever; after a forced
    `</think>` it writes what its weights like, but no marker."""
    from scripted_students import force

    head = (f"{BUDGET_START}{declared}{BUDGET_END}\n" if declared else "") + "<think>"
    head_ids = tokenizer(head, add_special_tokens=False)["input_ids"]
    (word,) = tokenizer(" so", add_special_tokens=False)["input_ids"]
    markers = tokenizer.convert_tokens_to_ids(["<think>", "</think>", BUDGET_START, BUDGET_END])
    end = markers[1]

    def script(generated, logits):
        if len(generated) < len(head_ids):
            force(logits, head_ids[len(generated)])
        elif end not in generated:
            force(logits, word)
        else:
            logits[markers] = float("-inf")

    return script


@pytest.mark.parametrize("name", list(REAL_STUDENTS))
@pytest.mark.parametrize(("mode", "budget", "declared", "limit"), [("max", 16, None, 16), ("auto", None, 24, 27)])
def test_the_hard_stop_holds_a_real_tokenizer_student(real_students, name, mode, budget, declared, limit):
    """A student with a real tokenizer and chat template (the markers added, as SFT adds them) that never closes its
    thought: the thought is closed at its limit (max: N; auto: the declared budget, its digits split by the Qwen
    tokenizers, plus 10%), the answer capped, every stop counted."""
    from scripted_students import scripted
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cotx_rl.budget import count_thinking_tokens, parse_completion
    from cotx_rl.generation import BudgetedGenerator, summarize
    from cotx_rl.models import add_budget_markers

    tokenizer = AutoTokenizer.from_pretrained(real_students[name])
    add_budget_markers(tokenizer)
    model = AutoModelForCausalLM.from_pretrained(real_students[name])
    model.resize_token_embeddings(len(tokenizer))
    student = scripted(model, tokenizer, never_closing(tokenizer, declared))
    generator = BudgetedGenerator(student, tokenizer, max_new_tokens=80, answer_tokens=4, batch_size=3,
                                  max_budget_tokens=32)  # fmt: skip
    rows = generator.generate(["What is 2 + 3?", "Find x if 2x = 10.", "Compute 7 * 6."], mode, budget, hard_stop=True)
    for row in rows:
        parsed = parse_completion(row["completion"])
        assert parsed.well_formed and parsed.declared_budget_tokens == declared, row["completion"]
        assert row["thinking_tokens"] == count_thinking_tokens(row["completion"], tokenizer) == limit
        assert row["hard_stopped"] and row["declared_budget_tokens"] == declared
        assert row["finish_reason"] in ("answer_cap", "stop")
    assert summarize(rows)["hard_stop_rate"] == 1.0
