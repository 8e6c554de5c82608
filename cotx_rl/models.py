"""The one place that loads students and tokenizers: the embedded student built from a config, or any causal LM by
name or path, full or as a LoRA adapter on its base.

Every stage loads through here, so that a tokenizer always has a pad token, a chat template and the budget markers,
and a LoRA adapter is handled the same way in training, in GRPO and in evaluation.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cotx_rl.budget import SPECIAL_MARKERS, resolve_tokenizer
from cotx_rl.io import StageInputError, looks_like_local_path

logger = logging.getLogger(__name__)
EMBEDDED = "embedded"
MODEL_FILES = ("config.json", "adapter_config.json")  # a full model's folder, or a LoRA adapter's
TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json")
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


@dataclass
class EmbeddedStudentArguments:
    """Size of the embedded student (used when `model_name_or_path: embedded`)."""

    student_hidden_size: int = field(default=128, metadata={"help": "Embedded student: hidden size."})
    student_num_layers: int = field(default=4, metadata={"help": "Embedded student: transformer layers."})
    student_num_heads: int = field(default=4, metadata={"help": "Embedded student: attention heads."})


def is_adapter(path: str | Path) -> bool:
    """Whether a folder holds a LoRA adapter (PEFT's `adapter_config.json`) rather than a full model."""
    return (Path(path) / "adapter_config.json").exists()


def check_model_source(name: str | None, what: str = "model_name_or_path") -> None:
    """Fail before any work when a local model path does not exist or holds no model."""
    if not name:
        raise StageInputError(f"{what} is required (a model name, a local path, or `embedded`).")
    if name == EMBEDDED:
        return
    if not looks_like_local_path(name):
        check_hub_name_cached(name, what)
        return
    folder = Path(name).expanduser()
    if not folder.is_dir():
        raise StageInputError(f"{what} {name!r} does not exist (no such directory).")
    if not any((folder / file).is_file() for file in MODEL_FILES):
        # An output folder of a run that has not finished holds checkpoints only: name the latest.
        steps = [p.name.removeprefix("checkpoint-") for p in folder.glob("checkpoint-*")]
        steps = sorted(int(step) for step in steps if step.isdigit())
        hint = f"; its latest checkpoint is {str(folder / f'checkpoint-{steps[-1]}')!r}" if steps else ""
        raise StageInputError(
            f"{what} {name!r} holds no model (neither {' nor '.join(MODEL_FILES)}){hint}; point it at a model folder."
        )
    if is_adapter(folder):
        check_adapter_base(folder, what)


def adapter_base(folder: str | Path) -> str | None:
    """The base model a LoRA adapter folder names (`base_model_name_or_path` of its `adapter_config.json`)."""
    try:
        config = json.loads((Path(folder) / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise StageInputError(f"{str(Path(folder) / 'adapter_config.json')!r} cannot be read: {error}") from error
    return config.get("base_model_name_or_path") if isinstance(config, dict) else None


def check_adapter_base(folder: Path, what: str) -> None:
    """A LoRA adapter loads onto the base its config names, resolved from the working directory: a base path that is
    not here (an adapter trained elsewhere, or from another folder), or an uncached Hub name offline, is one line."""
    base = adapter_base(folder)
    config_path = str(folder / "adapter_config.json")
    if not base:
        raise StageInputError(f"{what} {str(folder)!r} is a LoRA adapter whose {config_path!r} names no base model.")
    if Path(base).expanduser().is_dir():
        check_model_source(base, f"the base model of {what} {str(folder)!r}")
    elif looks_like_local_path(base) or Path(base).expanduser().is_absolute():
        raise StageInputError(
            f"{what} {str(folder)!r} is a LoRA adapter on {base!r}, which is not a folder from here ({Path.cwd()}): "
            f"run from where the adapter was trained, or set base_model_name_or_path in {config_path!r}."
        )
    else:
        where = f"{what} {str(folder)!r} is a LoRA adapter whose base model (no such folder from {Path.cwd()}; as a Hub name)"
        check_hub_name_cached(base, where)


def tokenizer_source(path: str) -> str:
    """Where a model's tokenizer is: its folder, or, for a LoRA adapter saved without one (plain PEFT saves none),
    its base model."""
    folder = Path(path).expanduser()
    if folder.is_dir() and is_adapter(folder) and not any((folder / f).is_file() for f in TOKENIZER_FILES):
        base = adapter_base(folder)
        if base:
            logger.info("%s holds no tokenizer: using its base model's (%s).", path, base)
            return base
    return path


def check_hub_name_cached(name: str, what: str) -> None:
    """Offline (`HF_HUB_OFFLINE=1`), a Hub name must already be in the local cache: say so in one line rather than
    let transformers fail with a traceback halfway through loading."""
    from huggingface_hub import constants, try_to_load_from_cache

    if not constants.is_offline_mode():
        return
    if not any(isinstance(try_to_load_from_cache(name, file), str) for file in MODEL_FILES):
        raise StageInputError(
            f"{what} {name!r} is not in the local Hugging Face cache ({constants.HF_HUB_CACHE}) and HF_HUB_OFFLINE is "
            "set: download it first (`hf download` with network), or point it at a local model folder."
        )


def add_budget_markers(tokenizer, model=None) -> list[int]:
    """Add `<think>`, `</think>`, `<budget>`, `</budget>` as single tokens when missing; resize the model to match.

    They are added as ordinary (not special) tokens so that decoding with `skip_special_tokens=True`, as TRL does,
    keeps them in the text rewards read. Returns the ids of the added tokens.
    """
    vocab = tokenizer.get_vocab()
    missing = [marker for marker in SPECIAL_MARKERS if marker not in vocab]
    if missing:
        tokenizer.add_tokens(missing, special_tokens=False)
        logger.info("Added budget markers %s to the tokenizer.", missing)
    if model is not None and model.get_input_embeddings().weight.shape[0] < len(tokenizer):
        model.resize_token_embeddings(len(tokenizer))
    return tokenizer.convert_tokens_to_ids(missing)


def load_tokenizer(name_or_path: str):
    """The student's tokenizer: the embedded one, or one by name or path with a pad token and a chat template."""
    if name_or_path == EMBEDDED:
        from cotx_rl.tiny import build_tiny_tokenizer

        return build_tiny_tokenizer()
    try:
        tokenizer = resolve_tokenizer(tokenizer_source(name_or_path))
    except ValueError as error:
        raise StageInputError(str(error)) from error
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.chat_template is None:
        tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    return tokenizer


def _pretrained_kwargs(model_args) -> dict:
    kwargs = {"dtype": getattr(model_args, "dtype", None) or "auto"}
    if getattr(model_args, "model_revision", None):
        kwargs["revision"] = model_args.model_revision
    if getattr(model_args, "attn_implementation", None):
        kwargs["attn_implementation"] = model_args.attn_implementation
    return kwargs


def load_student(model_args, embedded: EmbeddedStudentArguments | None = None, seed: int = 0) -> tuple[Any, Any]:
    """`(model, tokenizer)` for SFT: the embedded student from scratch, or a pretrained causal LM.

    The tokenizer gets the budget markers; the model's embeddings are resized to match.
    """
    check_model_source(model_args.model_name_or_path)
    tokenizer = load_tokenizer(model_args.model_name_or_path)
    if model_args.model_name_or_path == EMBEDDED:
        from cotx_rl.tiny import build_tiny_student

        embedded = embedded or EmbeddedStudentArguments()
        model = build_tiny_student(
            tokenizer,
            seed=seed,
            hidden_size=embedded.student_hidden_size,
            num_layers=embedded.student_num_layers,
            num_heads=embedded.student_num_heads,
            attn_implementation=model_args.attn_implementation or "eager",
        )
    else:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(model_args.model_name_or_path, **_pretrained_kwargs(model_args))
    added = add_budget_markers(tokenizer, model)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model._cotx_added_token_ids = added  # LoRA has to train these rows of the embedding too
    return model, tokenizer


def _module_name(model, module) -> str:
    """The short name PEFT matches module keys against (`embed_tokens`, `lm_head`)."""
    return next(name for name, candidate in model.named_modules() if candidate is module).rsplit(".", 1)[-1]


def output_layer_is_tied(model) -> bool:
    """Whether the output layer shares its weight with the input embedding (Qwen2.5-1.5B, Qwen3 <= 4B) or not
    (DeepSeek-R1-Distill-Qwen, 7B/8B students)."""
    output = model.get_output_embeddings()
    return output is not None and output.weight is model.get_input_embeddings().weight


def lora_config(model_args, model) -> Any:
    """TRL's LoRA config from `ModelConfig`, training the rows of any marker tokens just added.

    The rows train in the input embedding and, when the output layer is not tied to it, in the output layer too: a
    student must learn both to read the markers and to write them. (Tied, PEFT trains the one shared matrix.)
    """
    from trl import get_peft_config

    config = get_peft_config(model_args)
    added = getattr(model, "_cotx_added_token_ids", [])
    if config is not None and added:
        layers = [model.get_input_embeddings()]
        if not output_layer_is_tied(model):
            layers.append(model.get_output_embeddings())
        config.trainable_token_indices = {_module_name(model, layer): list(added) for layer in layers}
    return config


def expose_output_bias(model) -> None:
    """Let TRL's fused LM head read `lm_head.bias` through PEFT's trainable-token wrapper.

    TRL's SFT and GRPO trainers compute log-probabilities from `lm_head.weight` and `lm_head.bias` directly. When the
    marker rows train (`trainable_token_indices`), PEFT wraps the output layer in a `TrainableTokensWrapper` that
    answers `weight` (the merged weight, so the trained rows take part) but not `bias`, and the first step fails with
    `AttributeError: 'TrainableTokensWrapper' object has no attribute 'bias'`. The base layer's bias (None for every
    student here) is set on the wrapper as a plain attribute, so it is neither a second parameter nor saved twice.
    """
    try:
        from peft.utils.other import TrainableTokensWrapper
    except ImportError:  # no PEFT, no wrapper
        return
    output = model.get_output_embeddings()
    if isinstance(output, TrainableTokensWrapper) and "bias" not in vars(output):
        object.__setattr__(output, "bias", output.token_adapter.get_base_layer().bias)


# Written into a merged folder: which adapter files it was merged from (see `merged_model_path`).
MERGE_SOURCE_FILE = "cotx_merged_from.json"


def _adapter_fingerprint(path: str) -> dict:
    """The adapter folder and the size and modification time of each of its files: they change when SFT saves again."""
    folder = Path(path).resolve()
    files = {item.name: [item.stat().st_size, item.stat().st_mtime_ns] for item in folder.iterdir() if item.is_file()}
    return {"adapter": str(folder), "files": dict(sorted(files.items()))}


def merged_model_path(path: str, output_dir: str) -> str:
    """A full model for engines that load no PEFT adapter (vLLM): an adapter folder is merged onto its base (the
    marker rows it trained included) and saved under `output_dir/merged/<name>`; a full model is returned as it is.
    The merged model's weight names are the base model's own, with no `lora_` or `token_adapter` in them.

    The merge is reused only while that folder holds a merge of these very adapter files: an adapter saved again (SFT
    run again) or another adapter with the same folder name is merged anew, never answered with a stale model."""
    if not is_adapter(path):
        return path
    import json

    from accelerate import PartialState

    # Absolute: the GRPO adapter records this folder as its base, and eval may run from another directory.
    merged = (Path(output_dir) / "merged" / Path(path).name).resolve()
    source = merged / MERGE_SOURCE_FILE
    with PartialState().main_process_first():
        fingerprint = _adapter_fingerprint(path)
        current = source.is_file() and json.loads(source.read_text(encoding="utf-8")) == fingerprint
        if not (current and (merged / "config.json").is_file()):
            source.unlink(missing_ok=True)  # a merge cut short is never taken for a finished one
            model, tokenizer = load_for_inference(path, "cpu")
            model.save_pretrained(merged)
            tokenizer.save_pretrained(merged)
            source.write_text(json.dumps(fingerprint), encoding="utf-8")
            logger.info("Merged the LoRA adapter %s onto its base in %s (vLLM loads full models).", path, merged)
    return str(merged)


def load_policy(path: str, model_args, merge_into: str | None = None) -> tuple[Any, Any]:
    """`(model, peft_config)` for GRPO from the SFT output.

    A LoRA adapter is loaded on its base and kept trainable, unless `merge_into` names a folder: then it is merged into
    a full model there first (vLLM generation, whose weight sync knows LoRA layers but not PEFT's trainable-token
    wrappers), and the recipe's own LoRA keys, if any, start a new adapter on the merged model. A full model gets a new
    LoRA config when the recipe asks for one.
    """
    if is_adapter(path) and merge_into is None:
        from peft import AutoPeftModelForCausalLM

        return AutoPeftModelForCausalLM.from_pretrained(
            path, is_trainable=True, **_pretrained_kwargs(model_args)
        ), None
    from transformers import AutoModelForCausalLM

    if merge_into is not None:
        path = merged_model_path(path, merge_into)
    model = AutoModelForCausalLM.from_pretrained(path, **_pretrained_kwargs(model_args))
    return model, lora_config(model_args, model)


def load_for_inference(path: str, device: str = "auto", dtype: str = "auto") -> tuple[Any, Any]:
    """`(model, tokenizer)` for generation from a full model folder or a LoRA adapter folder (merged onto its base)."""
    import torch

    check_model_source(path, "model path")
    if is_adapter(path):
        from peft import AutoPeftModelForCausalLM

        model = AutoPeftModelForCausalLM.from_pretrained(path, dtype=dtype).merge_and_unload()
    else:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return model.to(device).eval(), load_tokenizer(path)
