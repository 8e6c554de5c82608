"""The embedded student: a word-level tokenizer built deterministically, and a small Llama model from a config.

The tokenizer keeps every word the procedural teacher writes as one token and splits numbers into digits, with the
leading space folded into the token (SentencePiece style), so decoding gives the text back exactly and a step such as
`19 + 7 = 26.` is eight tokens. Digits rather than whole numbers: a student learns to copy and add ten digit tokens
far sooner than a hundred number tokens, each of which it would have to learn on its own. Unknown words map to
`<unk>`.
"""

from __future__ import annotations

import string

from cotx_rl import budget
from cotx_rl.teachers import procedural

CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
SPECIAL_TOKENS = ("<pad>", "<unk>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>")
SPACE = "\u2581"
_PIECE_PATTERN = rf"{SPACE}?\\[A-Za-z]+|{SPACE}?[A-Za-z]+|{SPACE}?[0-9]|{SPACE}?[^A-Za-z0-9{SPACE}]|{SPACE}"


def _vocabulary_texts() -> list[str]:
    templates = [
        *procedural.INTROS, *procedural.PLANS, *procedural.START, *procedural.CONNECTORS, *procedural.CHECKS,
        *procedural.WRONG_TURN, *procedural.RECAPS, *procedural.VERIFY_INTROS, *procedural.CONCLUSIONS,
        *procedural.FILLERS, procedural.RESPONSE, "We need the answer is the final answer Compute Answer",
        budget.budget_directive("exact", 1), budget.budget_directive("max", 1), budget.budget_directive("auto"),
    ]  # fmt: skip
    return [t.replace("{", " ").replace("}", " ") for t in templates]


def build_tiny_tokenizer():
    """The embedded student's tokenizer as a `PreTrainedTokenizerFast` (deterministic: same vocabulary every time)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme="never", split=False),
            pre_tokenizers.Split(Regex(_PIECE_PATTERN), behavior="isolated"),
        ]
    )
    pieces = set()
    for text in _vocabulary_texts():
        for piece, _ in pre_tokenizer.pre_tokenize_str(text):
            word = piece.lstrip(SPACE)
            pieces.update((word, SPACE + word) if word else (piece,))
    for digit in string.digits:
        pieces.update((digit, SPACE + digit))
    for char in string.punctuation + "\n":
        pieces.update((char, SPACE + char))
    pieces.update((SPACE, "\\boxed", SPACE + "\\boxed"))
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for piece in sorted(pieces):
        vocab.setdefault(piece, len(vocab))

    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizer
    backend.decoder = decoders.Metaspace(replacement=SPACE, prepend_scheme="never", split=False)
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    # The budget markers are ordinary added tokens: decoding with skip_special_tokens (as TRL does) must keep them.
    backend.add_tokens([AddedToken(t, special=False, normalized=False) for t in budget.SPECIAL_MARKERS])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        pad_token="<pad>",
        eos_token="<|end|>",
        additional_special_tokens=list(SPECIAL_TOKENS[3:]),
        model_max_length=4096,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_student_config(tokenizer, hidden_size: int = 128, num_layers: int = 4, num_heads: int = 4, **overrides):
    """A `LlamaConfig` for the embedded student (about 1M parameters at the defaults).

    Llama rather than Qwen2: `AutoTokenizer` forces Qwen2's own byte-level tokenizer class on any `qwen2` checkpoint,
    which would replace the word-level tokenizer saved with the model.
    """
    from transformers import LlamaConfig

    settings = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=4 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    settings.update(overrides)
    return LlamaConfig(**settings)


def build_tiny_student(tokenizer, seed: int = 0, **config_overrides):
    """A freshly initialised embedded student (trained from scratch by SFT)."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_student_config(tokenizer, **config_overrides))
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, do_sample=False
    )
    return model
