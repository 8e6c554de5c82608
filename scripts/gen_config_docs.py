"""Write docs/config.md: every `cotx-rl` stage and every recipe key it accepts, from the stages' dataclasses.

    python scripts/gen_config_docs.py           # (re)write docs/config.md
    python scripts/gen_config_docs.py --check   # exit 1 when docs/config.md differs from what would be written

The keys are the fields of the dataclasses that each stage's `make_parser()` gives TRL's `TrlParser`: the cotx-rl
ones are listed in full (type, default, help); TRL's `SFTConfig`, `GRPOConfig` and `ModelConfig` have hundreds of
keys and their own reference, so they are linked, with one table of the keys the recipes use most. The output depends
only on this repository (and on the names, never the defaults, of TRL's keys), so `tests/test_recipes.py` can require
the committed file to equal it.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import sys
from pathlib import Path
from unittest import mock

import yaml

REPO = Path(__file__).resolve().parents[1]
OUTPUT = REPO / "docs" / "config.md"
ACCELERATE_DIR = REPO / "recipes" / "accelerate"

TRL_DOCS = {
    "SFTConfig": "https://huggingface.co/docs/trl/sft_trainer#trl.SFTConfig",
    "GRPOConfig": "https://huggingface.co/docs/trl/grpo_trainer#trl.GRPOConfig",
    "ModelConfig": "https://github.com/huggingface/trl/blob/main/trl/trainer/model_config.py",
}
TRAINING_ARGUMENTS_DOCS = (
    "https://huggingface.co/docs/transformers/main_classes/trainer#transformers.TrainingArguments"
)

# The TRL keys recipes set most, with what they mean for cotx-rl. Written here rather than read from TRL, so that the
# page does not change with every TRL release; `trl_key_rows` still fails when TRL drops one of these names.
TRL_KEYS: list[tuple[str, tuple[str, ...], str]] = [
    (
        "model_name_or_path",
        ("sft",),
        "The student to start from: a Hub name, a local folder, or `embedded` (the "
        "built-in tiny student). `grpo` starts from `sft_model_path` instead.",
    ),
    (
        "dtype",
        ("sft", "grpo"),
        "Weights dtype when loading: `bfloat16` for a frozen LoRA base, `float32` master "
        "weights for a full fine-tune. In `grpo`, used for full checkpoints only.",
    ),
    ("attn_implementation", ("sft", "grpo"), "`sdpa`, `eager`, or `flash_attention_2` (needs flash-attn)."),
    (
        "use_peft",
        ("sft", "grpo"),
        "Train LoRA adapters instead of every weight. When `sft` saved an adapter, `grpo` trains that adapter on "
        "and ignores this key.",
    ),
    (
        "chat_template_path",
        ("sft",),
        "A `.jinja` chat template that replaces the student's for the whole run: applied before the examples are "
        "rendered and checked, and saved with the student, so `grpo`, `eval` and `generate` use it too "
        "(the DeepSeek-R1-Distill recipe sets it: the Hub's current template opens `<think>` itself).",
    ),
    ("lora_r", ("sft",), "LoRA rank."),
    ("lora_alpha", ("sft",), "LoRA scale numerator (the update is scaled by lora_alpha / lora_r)."),
    ("lora_dropout", ("sft",), "Dropout on the LoRA branch."),
    (
        "lora_target_modules",
        ("sft",),
        "Module names that get adapters, e.g. `[q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]`.",
    ),
    (
        "output_dir",
        ("sft", "grpo"),
        "Where the model, the checkpoints and the offline W&B run go; the next stage reads the model from here.",
    ),
    ("num_train_epochs", ("sft", "grpo"), "Passes over the training data."),
    ("max_steps", ("sft", "grpo"), "Optimizer steps to stop after; overrides num_train_epochs when positive."),
    (
        "per_device_train_batch_size",
        ("sft", "grpo"),
        "Examples (sft) or completions (grpo) per process per forward pass.",
    ),
    (
        "gradient_accumulation_steps",
        ("sft", "grpo"),
        "Forward passes per optimizer step: a step sees "
        "per_device_train_batch_size x processes x gradient_accumulation_steps examples or completions.",
    ),
    ("learning_rate", ("sft", "grpo"), "Peak learning rate."),
    ("lr_scheduler_type", ("sft", "grpo"), "`linear`, `cosine`, `constant_with_warmup`, ..."),
    ("warmup_steps", ("sft", "grpo"), "Warm-up length: a number of steps, or a fraction of all steps when below 1."),
    ("weight_decay", ("sft", "grpo"), "AdamW weight decay."),
    (
        "max_length",
        ("sft",),
        "Longest example in tokens. cotx-rl never lets it cut an example: `sft` stops before "
        "training when one is longer (or drops it, with `drop_long_examples: true`).",
    ),
    ("bf16", ("sft", "grpo"), "bf16 mixed precision; keep it equal to `mixed_precision` of the accelerate config."),
    (
        "gradient_checkpointing",
        ("sft", "grpo"),
        "Recompute activations in the backward pass, to fit long sequences "
        "(transformers 5 calls it `activation_checkpointing` and still accepts this name).",
    ),
    (
        "use_cpu",
        ("sft", "grpo"),
        "Train on the CPU; with `recipes/accelerate/cpu2.yaml` it is also what makes the processes join over gloo.",
    ),
    ("logging_steps", ("sft", "grpo"), "Steps between logged metrics."),
    ("save_strategy", ("sft", "grpo"), "`steps`, `epoch` or `no`: when checkpoints are written."),
    ("save_steps", ("sft", "grpo"), "Steps between checkpoints (with `save_strategy: steps`)."),
    ("save_total_limit", ("sft", "grpo"), "Checkpoints kept; older ones are deleted."),
    (
        "resume_from_checkpoint",
        ("sft", "grpo"),
        "A checkpoint folder to resume from. `true` means the last "
        "checkpoint in output_dir, and fails when there is none yet, so set it (or pass the flag) only to resume.",
    ),
    ("report_to", ("sft", "grpo"), "`wandb` (offline without WANDB_API_KEY; `wandb sync` uploads later) or `none`."),
    ("run_name", ("sft", "grpo"), "Name of the W&B run."),
    (
        "seed",
        ("sft", "grpo"),
        "Seed of the model initialization, the shuffling and (grpo) the modes and budgets drawn.",
    ),
    (
        "num_generations",
        ("grpo",),
        "Completions per prompt, the group GRPO compares. The completions per step "
        "must be divisible by it; `cotx-rl grpo` checks before training.",
    ),
    (
        "max_completion_length",
        ("grpo",),
        "Most tokens per completion: at least the largest budget plus `answer_tokens` (checked before training).",
    ),
    ("temperature", ("grpo",), "Sampling temperature of the completions."),
    ("beta", ("grpo",), "Weight of the KL penalty against the starting model; 0 loads no reference model."),
    ("loss_type", ("grpo",), "How token losses are averaged: `dapo`, `grpo`, `dr_grpo`, ..."),
    ("reward_weights", ("grpo",), "One weight per entry of `reward_funcs` (default: 1 each)."),
    ("use_vllm", ("grpo",), "Generate the completions with vLLM (needs `pip install vllm`)."),
    (
        "vllm_mode",
        ("grpo",),
        "`colocate`: vLLM runs inside the training processes, on their GPUs; `server`: a "
        "separate `trl vllm-serve` process generates, on GPUs of its own.",
    ),
    ("vllm_gpu_memory_utilization", ("grpo",), "colocate: the share of each GPU's memory vLLM takes."),
    (
        "vllm_max_model_length",
        ("grpo",),
        "colocate: vLLM's context window, at least the longest prompt plus max_completion_length.",
    ),
    ("vllm_server_base_url", ("grpo",), "server: the address of `trl vllm-serve`, e.g. `http://localhost:8000`."),
    ("vllm_server_timeout", ("grpo",), "server: seconds to wait for the server to answer before giving up."),
    ("log_completions", ("grpo",), "Log a table of sample prompts and completions (to W&B with `report_to: wandb`)."),
]


class _RecordingParser:
    """Takes `trl.TrlParser`'s place while a stage's `make_parser()` runs, and keeps the dataclasses it is given."""

    def __init__(self, dataclass_types, **kwargs):
        self.dataclass_types = list(dataclass_types)


def stage_dataclasses(stage: str) -> list[type]:
    """The dataclasses whose fields are the recipe keys of `stage`, in the order its parser takes them.

    They are recorded rather than read from a built parser: argparse refuses two dataclasses that share a key, and
    `key_clashes` should be able to name such a clash rather than fail on it.
    """
    module = importlib.import_module(f"cotx_rl.{stage}")
    with mock.patch("trl.TrlParser", _RecordingParser):
        return module.make_parser().dataclass_types


def is_project_dataclass(cls: type) -> bool:
    return cls.__module__.split(".")[0] in ("cotx_rl", "rewards")


def key_clashes(stage: str) -> list[str]:
    """Keys that two dataclasses of one stage both define (TrlParser cannot build a parser for such a stage)."""
    owners: dict[str, list[str]] = {}
    for cls in stage_dataclasses(stage):
        for field in dataclasses.fields(cls):
            owners.setdefault(field.name, []).append(cls.__name__)
    return [f"{key} ({', '.join(names)})" for key, names in owners.items() if len(names) > 1]


def yaml_value(value) -> str:
    """A value as it is written in a recipe (YAML flow style)."""
    value = dict(value) if isinstance(value, dict) else value  # e.g. JSONDict, a dict subclass
    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10_000).strip()
    return text.removesuffix("...").strip()


def default_text(field: dataclasses.Field) -> str:
    if field.default is not dataclasses.MISSING:
        return f"`{yaml_value(field.default)}`"
    if field.default_factory is not dataclasses.MISSING:
        return f"`{yaml_value(field.default_factory())}`"
    return "*required*"


def type_text(cls: type, name: str) -> str:
    """A field's annotation as written in the source, e.g. `str | None`.

    Read from the class rather than from `dataclasses.fields`: building a parser rewrites `Field.type` in place
    (HfArgumentParser resolves it, and turns `str | None` into `str`), so that would depend on what ran before.
    """
    for klass in cls.__mro__:
        annotation = vars(klass).get("__annotations__", {}).get(name)
        if annotation is not None:
            text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", repr(annotation))
            return f"`{text}`"
    return "`?`"


def cell(text: str) -> str:
    """Text that stays inside one Markdown table cell (a `|` splits cells even inside backticks, unless escaped)."""
    return " ".join(text.split()).replace("|", "\\|").replace("<", "&lt;")


def code_cell(text: str) -> str:
    """Code in a table cell: only `|` needs escaping, since `&lt;` would show as such inside backticks."""
    return text.replace("|", "\\|")


def summary(cls: type) -> str:
    """The first paragraph of a class's docstring, on one line."""
    doc = inspect.cleandoc(cls.__doc__ or "")
    return " ".join(doc.split("\n\n")[0].split())


def anchor(title: str) -> str:
    """GitHub's anchor for a heading."""
    kept = "".join(c for c in title.lower() if c.isalnum() or c in " -_")
    return kept.replace(" ", "-")


def key_table(cls: type) -> list[str]:
    lines = ["| key | type | default | help |", "|---|---|---|---|"]
    for field in dataclasses.fields(cls):
        help_text = field.metadata.get("help") or "(no help text)"
        row = [
            f"`{field.name}`",
            code_cell(type_text(cls, field.name)),
            code_cell(default_text(field)),
            cell(help_text),
        ]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def stage_section(stage: str, description: str, shown: set[str]) -> list[str]:
    lines = [f"## `cotx-rl {stage}`", "", f"{description} Module `cotx_rl.{stage}`.", ""]
    external = []
    for cls in stage_dataclasses(stage):
        if not is_project_dataclass(cls):
            external.append(cls.__name__)
            continue
        if cls.__name__ in shown:
            lines += [f"Also the keys of [`{cls.__name__}`](#{anchor(cls.__name__)}) (above).", ""]
            continue
        shown.add(cls.__name__)
        lines += [f"### {cls.__name__}", "", summary(cls), "", *key_table(cls), ""]
    if external:
        links = " and ".join(
            f"[`{name}`]({TRL_DOCS.get(name, 'https://huggingface.co/docs/trl')})" for name in external
        )
        lines += [
            f"Also every key of TRL's {links} (the training configs extend transformers' "
            f"[`TrainingArguments`]({TRAINING_ARGUMENTS_DOCS})); `cotx-rl {stage} --help` lists them all with the "
            f"defaults of the installed TRL. The ones recipes use most are in [Most used TRL keys]"
            f"(#{anchor('Most used TRL keys')}).",
            "",
        ]
    return lines


def trl_key_rows() -> list[str]:
    """The table of TRL keys; fails when a listed key is not a field of the stage's TRL dataclasses."""
    fields_by_stage = {
        stage: {
            f.name
            for cls in stage_dataclasses(stage)
            if not is_project_dataclass(cls)
            for f in dataclasses.fields(cls)
        }
        for stage in ("sft", "grpo")
    }
    lines = ["| key | stages | what it does in cotx-rl |", "|---|---|---|"]
    for key, stages, text in TRL_KEYS:
        missing = [stage for stage in stages if key not in fields_by_stage[stage]]
        if missing:
            raise ValueError(f"TRL key {key!r} is listed for {missing} but is not a key of those stages' TRL configs.")
        lines.append(f"| `{key}` | {', '.join(stages)} | {cell(text)} |")
    return lines


def header_sentence(path: Path) -> str:
    """The first sentence of the comment block a config file starts with."""
    comment = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        comment.append(line.removeprefix("#").strip())
    text = " ".join(comment)
    return text.split(". ")[0].removesuffix(".") + "." if text else "(no header comment)"


def accelerate_rows() -> list[str]:
    """One row per launcher config: its file and what its header comment says it is for."""
    lines = ["| file | what it is for |", "|---|---|"]
    for path in sorted(ACCELERATE_DIR.glob("*.yaml")):
        lines.append(f"| [`{path.name}`](../recipes/accelerate/{path.name}) | {cell(header_sentence(path))} |")
    return lines


def render() -> str:
    from cotx_rl.cli import STAGES

    lines = [
        "<!-- Generated by scripts/gen_config_docs.py from the stages' dataclasses: edit those, then run the script."
        " tests/test_recipes.py fails when this file is stale. -->",
        "",
        "# Recipe keys",
        "",
        "Every stage reads one flat YAML recipe, parsed by TRL's `TrlParser` into the dataclasses listed below: "
        "`cotx-rl <stage> --config recipe.yaml [--key value ...]`. A flag overrides the recipe key of the same name; "
        "a key that no dataclass of the stage has is an error. Defaults are written as they would be in YAML.",
        "",
        "Each stage also runs as `python -m cotx_rl.<stage> --config recipe.yaml`, and the training stages under "
        "`accelerate launch --config_file recipes/accelerate/<file> -m cotx_rl.<stage> --config recipe.yaml` (see "
        f"[Launcher configs](#{anchor('Launcher configs')})).",
        "",
        "Besides its keys, a recipe may have an `env:` mapping; TrlParser sets those environment variables before "
        "anything else runs:",
        "",
        "```yaml",
        "env:",
        "  WANDB_PROJECT: cotx-rl",
        '  TOKENIZERS_PARALLELISM: "false"',
        "```",
        "",
        "Run-level settings are written once per run: a recipe folder's `run.yaml` holds `output_root`, "
        "`budget_grid`, `answer_tokens`, `seed` (and a shared `env:`), and every stage recipe of the folder says "
        "`include: run.yaml` (a path relative to the recipe). An included key reaches every stage that has it and is "
        "ignored by the others; the recipe's own keys win over it, and flags over both. `${output_root}` in any "
        "string value, in a recipe or a flag, is replaced by the run's `output_root` (`--output_root` on the command "
        "line moves a whole run). The keys of [`RunArguments`](#runarguments) are those settings; `cotx-rl pipeline` "
        "passes its own `output_root`, `budget_grid`, `answer_tokens` and `seed` on to every stage that takes them.",
        "",
        "| stage | what it does |",
        "|---|---|",
    ]
    lines += [f"| [`{stage}`](#{anchor(f'cotx-rl {stage}')}) | {cell(text)} |" for stage, text in STAGES.items()]
    lines.append("")
    shown: set[str] = set()
    for stage, text in STAGES.items():
        lines += stage_section(stage, text, shown)
    lines += [
        "## Most used TRL keys",
        "",
        "The `sft` and `grpo` stages take every key of TRL's [`SFTConfig`]"
        f"({TRL_DOCS['SFTConfig']}) or [`GRPOConfig`]({TRL_DOCS['GRPOConfig']}), and of [`ModelConfig`]"
        f"({TRL_DOCS['ModelConfig']}). Their defaults belong to the installed TRL (`cotx-rl sft --help`); what "
        "follows is what the keys the recipes set mean here.",
        "",
        *trl_key_rows(),
        "",
        "## Launcher configs",
        "",
        "`accelerate launch --config_file recipes/accelerate/<file> -m cotx_rl.<stage> --config <recipe>`, or "
        "`launcher: accelerate` with `accelerate_config: <file>` for a stage of a pipeline recipe.",
        "",
        *accelerate_rows(),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="Only compare; exit 1 when docs/config.md is stale.")
    args = parser.parse_args(argv)
    from cotx_rl.cli import STAGES

    for stage in STAGES:
        for clash in key_clashes(stage):
            sys.stderr.write(f"warning: stage {stage} defines the key {clash} twice; TrlParser cannot parse it.\n")
    text = render()
    if args.check:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else ""
        if current != text:
            sys.stderr.write(f"{OUTPUT.relative_to(REPO)} is stale: run python scripts/gen_config_docs.py\n")
            return 1
        return 0
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
