"""Tiny students of the real architectures, saved with the real tokenizers and chat templates of `shared/data/real`.

Each is a randomly initialised model built from its family's real config class (`Qwen2ForCausalLM` for Qwen2.5 and
DeepSeek-R1-Distill-Qwen, `Qwen3ForCausalLM` for Qwen3) with a hidden size of 32 and one layer, and the real
tokenizer's padded vocabulary, so that the recipes meet the same tokenizers, templates, marker tokens and (un)tied
output layers as on the real models, in seconds on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# Qwen pads its embedding matrix beyond the tokenizer (151,665 tokens in 151,936 rows): the budget markers the SFT
# stage adds then fit in rows that are already there, as they do on the real checkpoints.
QWEN_PADDED_VOCAB = 151_936


@dataclass(frozen=True)
class RealStudent:
    """How to build one tiny student: its family's config class, tokenizer folder and whether lm_head is tied."""

    name: str
    model_type: str  # qwen2 or qwen3
    tokenizer: str  # folder under shared/data/real/tokenizers
    tied: bool


# The real checkpoints tie their output layer in Qwen2.5-1.5B-Instruct and Qwen3 up to 4B, and untie it in
# DeepSeek-R1-Distill-Qwen (and in Qwen2.5/Qwen3 7B and 8B).
REAL_STUDENTS = {
    "qwen2.5": RealStudent("qwen2.5", "qwen2", "qwen2.5-instruct", tied=True),
    "r1-distill": RealStudent("r1-distill", "qwen2", "deepseek-r1-distill-qwen", tied=False),
    "qwen3": RealStudent("qwen3", "qwen3", "qwen3", tied=True),
}


def tiny_config(student: RealStudent, tokenizer, hidden_size: int = 32, num_layers: int = 1):
    from transformers import Qwen2Config, Qwen3Config

    config_class = {"qwen2": Qwen2Config, "qwen3": Qwen3Config}[student.model_type]
    return config_class(
        vocab_size=max(QWEN_PADDED_VOCAB, len(tokenizer)),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=hidden_size // 2,
        max_position_embeddings=4096,
        tie_word_embeddings=student.tied,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def build_real_student(student: RealStudent, tokenizers_dir: Path, folder: Path, seed: int = 0) -> Path:
    """Save a tiny random student of `student`'s family with its real tokenizer in `folder`; returns the folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    tokenizer = AutoTokenizer.from_pretrained(tokenizers_dir / student.tokenizer)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(student, tokenizer))
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
