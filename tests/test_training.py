"""The sft and grpo stages on tiny students: markers, LoRA, rewards from the recipe, checks before training."""

import json

import pytest

from cotx_rl import compress, grpo, sft
from cotx_rl.arithmetic import make_problems
from cotx_rl.budget import SPECIAL_MARKERS
from cotx_rl.compress import CompressArguments
from cotx_rl.io import StageInputError, write_rows
from cotx_rl.teachers.procedural import ProceduralTeacher

TINY = ["--student_hidden_size", "32", "--student_num_layers", "1", "--student_num_heads", "2"]
CPU = ["--use_cpu", "true", "--bf16", "false", "--gradient_checkpointing", "false", "--report_to", "none"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    rows = make_problems(40, "train", seed=1)
    outputs = ProceduralTeacher(min_words=70).generate(rows)
    traces = [{**r, "reasoning": o.reasoning, "response": o.response} for r, o in zip(rows, outputs)]
    write_rows(folder / "kept.jsonl", traces)
    write_rows(folder / "problems.jsonl", rows)
    compress.main(
        CompressArguments(traces_path=str(folder / "kept.jsonl"), output_path=str(folder / "examples.jsonl"))
    )
    return folder


def run_sft(argv):
    return sft.main(*sft.make_parser().parse_args_and_config(argv))


def run_grpo(argv):
    return grpo.main(*grpo.make_parser().parse_args_and_config(argv))


def sft_argv(data, output, *extra, embedded=True):
    return [
        "--dataset_path", str(data / "examples.jsonl"), "--model_name_or_path", "embedded", "--output_dir", str(output),
        "--max_steps", "3", "--per_device_train_batch_size", "8", "--learning_rate", "1e-3", "--logging_steps", "1",
        "--save_strategy", "no", "--max_length", "192", *(TINY if embedded else []), *CPU, *extra,
    ]  # fmt: skip


def grpo_argv(data, sft_dir, output, *extra):
    return [
        "--sft_model_path", str(sft_dir), "--problems_path", str(data / "problems.jsonl"), "--output_dir", str(output),
        "--max_steps", "2", "--per_device_train_batch_size", "8", "--num_generations", "4",
        "--max_completion_length", "112", "--logging_steps", "1", "--save_strategy", "no", "--learning_rate", "1e-4",
        *CPU, *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def sft_model(data, tmp_path_factory):
    output = tmp_path_factory.mktemp("sft")
    trainer = run_sft(sft_argv(data, output))
    assert trainer.state.global_step == 3
    return output


def test_sft_saves_a_student_with_the_markers(sft_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(sft_model)
    for marker in SPECIAL_MARKERS:
        assert len(tokenizer(marker, add_special_tokens=False)["input_ids"]) == 1
    model = AutoModelForCausalLM.from_pretrained(sft_model)
    assert model.get_input_embeddings().weight.shape[0] >= len(tokenizer)


def test_sft_trains_on_the_completion_only(data, tmp_path):
    from trl import SFTTrainer

    trainer = run_sft(sft_argv(data, tmp_path / "out", "--max_steps", "1"))
    assert isinstance(trainer, SFTTrainer)
    batch = next(iter(trainer.get_train_dataloader()))
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    start = ids.index(trainer.processing_class.convert_tokens_to_ids("<|assistant|>"))
    # The question, its budget directive and the assistant header carry no loss; the completion does.
    assert all(label == -100 for label in labels[: start + 2])
    completion = [label for label in labels[start + 2 :] if label != -100]
    assert completion and trainer.processing_class.decode(completion).startswith(("<budget>", "<think>"))


def test_sft_refuses_examples_longer_than_max_length(data, tmp_path):
    with pytest.raises(StageInputError, match="longer than max_length=40"):
        run_sft(sft_argv(data, tmp_path / "out", "--max_length", "40"))


def test_lora_sft_adds_markers_and_trains_their_embeddings(data, bpe_tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM, LlamaConfig

    base = tmp_path / "base"
    config = LlamaConfig(vocab_size=len(bpe_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, pad_token_id=bpe_tokenizer.pad_token_id)  # fmt: skip
    AutoModelForCausalLM.from_config(config).save_pretrained(base)
    bpe_tokenizer.save_pretrained(base)
    output = tmp_path / "lora"
    argv = sft_argv(data, output, "--model_name_or_path", str(base), "--use_peft", "true", "--lora_r", "4",
                    "--lora_target_modules", "q_proj", "v_proj", "--max_length", "1024", embedded=False)  # fmt: skip
    run_sft(argv)
    adapter = json.loads((output / "adapter_config.json").read_text())
    assert adapter["r"] == 4 and adapter["trainable_token_indices"]
    from cotx_rl.models import load_for_inference

    model, tokenizer = load_for_inference(str(output))
    assert all(marker in tokenizer.get_vocab() for marker in SPECIAL_MARKERS)
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer)


def test_grpo_trains_from_the_sft_model_with_recipe_rewards(data, sft_model, tmp_path):
    kwargs = json.dumps({"composite_reward": {"format_weight": 0.1}})
    trainer = run_grpo(grpo_argv(data, sft_model, tmp_path / "grpo", "--reward_funcs", "composite_reward",
                                 "rewards.format_reward", "--reward_weights", "1.0", "0.5", "--reward_kwargs", kwargs))  # fmt: skip
    assert trainer.state.global_step == 2
    logged = {key for entry in trainer.state.log_history for key in entry}
    assert {"rewards/composite_reward/mean", "rewards/format_reward/mean"} <= logged
    modes = {key.split("/")[1] for key in logged if key.startswith("budget/")}
    assert modes, sorted(logged)
    composite = trainer.reward_funcs[0]
    assert composite.format_weight == 0.1 and composite.tokenizer is not None
    assert (tmp_path / "grpo" / "model.safetensors").exists() and (tmp_path / "grpo" / "tokenizer.json").exists()


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--reward_funcs", "no_such_reward"], "no_such_reward"),
        (["--reward_funcs", "composite_reward", "format_reward", "--reward_weights", "1.0"], "reward_weights has 1"),
        (["--per_device_train_batch_size", "6"], "divisible by num_generations"),
        (["--max_completion_length", "64"], "max_completion_length=64"),
        (["--mode_proportions", '{"exact": 1, "sometimes": 1}'], "mode_proportions"),
    ],
)
def test_grpo_checks_before_training(data, sft_model, tmp_path, extra, message):
    # StageInputError is a ValueError; TRL's own config check (the batch) raises ValueError at parse time.
    with pytest.raises(ValueError, match=message):
        run_grpo(grpo_argv(data, sft_model, tmp_path / "grpo", *extra))
    assert not (tmp_path / "grpo").exists()


def test_grpo_needs_the_sft_checkpoint(data, tmp_path):
    with pytest.raises(StageInputError, match="SFT checkpoint .*missing_sft"):
        run_grpo(grpo_argv(data, tmp_path / "missing_sft", tmp_path / "grpo"))


def test_grpo_refuses_budgets_outside_the_grid(data, sft_model, tmp_path):
    rows = [{"id": "a", "question": "Compute 2 + 3.", "answer": "5", "budget_mode": "exact", "budget_tokens": 50}]
    write_rows(tmp_path / "p.jsonl", rows)
    argv = grpo_argv(data, sft_model, tmp_path / "grpo", "--problems_path", str(tmp_path / "p.jsonl"))
    with pytest.raises(
        StageInputError, match="p.jsonl' line 1 \\(id 'a'\\): budget_tokens is 50 in exact mode, outside budget_grid"
    ):
        run_grpo(argv)
