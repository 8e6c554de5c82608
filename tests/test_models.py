"""Loading helpers of `cotx_rl.models`: merging a LoRA adapter for engines that load full models (vLLM)."""

from __future__ import annotations

from pathlib import Path

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
