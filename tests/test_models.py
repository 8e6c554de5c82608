"""Loading helpers of `cotx_rl.models`: merging a LoRA adapter for engines that load full models (vLLM), an
adapter's base model and tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cotx_rl.models import merged_model_path
from cotx_rl.tiny import build_tiny_student


def save_adapter(base: str, folder, seed: int) -> None:
    """A LoRA adapter on `base` whose (random, nonzero) weights depend on `seed`, saved in `folder`."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    config = LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(folder)


def q_proj(folder: str) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder).model.layers[0].self_attn.q_proj.weight.detach().clone()


def test_merged_model_follows_its_adapter(tiny_tokenizer, tmp_path, monkeypatch):
    """The merged folder is reused only while it holds a merge of this very adapter: an adapter saved again (SFT run
    again) or another adapter of the same folder name is merged anew, never answered with a stale model."""
    base = tmp_path / "base"
    build_tiny_student(tiny_tokenizer).save_pretrained(base)
    tiny_tokenizer.save_pretrained(base)
    first, other = tmp_path / "a" / "sft", tmp_path / "b" / "sft"
    for folder, seed in ((first, 1), (other, 2)):
        save_adapter(str(base), folder, seed)
        tiny_tokenizer.save_pretrained(folder)
    work = tmp_path / "eval"

    with monkeypatch.context() as patch:  # a relative output_dir still gives an absolute base for the GRPO adapter
        patch.chdir(tmp_path)
        merged = merged_model_path(str(first), "eval")
    assert Path(merged).is_absolute() and Path(merged).parent == work / "merged"
    first_weights = q_proj(merged)
    assert not torch.equal(first_weights, q_proj(str(base)))  # the adapter took part
    assert torch.equal(q_proj(merged_model_path(str(first), str(work))), first_weights)  # reused as it is

    other_weights = q_proj(merged_model_path(str(other), str(work)))  # same folder name, another adapter
    assert not torch.equal(other_weights, first_weights)

    save_adapter(str(base), first, 3)  # SFT run again into the same folder
    retrained = q_proj(merged_model_path(str(first), str(work)))
    assert not torch.equal(retrained, first_weights) and not torch.equal(retrained, other_weights)


def test_a_plain_peft_adapter_generates_with_its_base_models_tokenizer(tiny_tokenizer, tmp_path, monkeypatch):
    """PEFT saves an adapter without a tokenizer: generation takes the base model's."""
    from cotx_rl.generate import BudgetedGenerator

    base = tmp_path / "base"
    build_tiny_student(tiny_tokenizer, hidden_size=16, num_layers=1, num_heads=2).save_pretrained(base)
    tiny_tokenizer.save_pretrained(base)
    save_adapter(str(base), tmp_path / "adapter", seed=1)
    assert not (tmp_path / "adapter" / "tokenizer_config.json").exists()
    generator = BudgetedGenerator(str(tmp_path / "adapter"), max_new_tokens=4, answer_tokens=2, device="cpu")
    assert generator.tokenizer.get_vocab() == tiny_tokenizer.get_vocab()
    (row,) = generator.generate(["Compute 2 + 3."], "max", 8)
    assert row["question"] == "Compute 2 + 3." and row["completion_tokens"] <= 4


def test_an_adapter_whose_base_is_not_here_is_one_line(tiny_tokenizer, tmp_path, monkeypatch):
    """An adapter trained with a relative base path (`students/base`), used from another folder: one line naming the
    adapter, its base and the working directory, before anything loads."""
    from cotx_rl.io import StageInputError
    from cotx_rl.models import check_model_source

    monkeypatch.chdir(tmp_path)
    build_tiny_student(tiny_tokenizer, hidden_size=16, num_layers=1, num_heads=2).save_pretrained("students/base")
    save_adapter("students/base", tmp_path / "adapter", seed=1)
    check_model_source(str(tmp_path / "adapter"), "model")  # from where it was trained: fine
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        StageInputError,
        match=r"adapter' is a LoRA adapter whose base model \(no such folder from .*elsewhere; as a Hub name\) 'students/base' is not in the local",
    ):
        check_model_source(str(tmp_path / "adapter"), "model")
