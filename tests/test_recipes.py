"""Every recipe under recipes/ parses with its stage's parser, the launcher configs load, and docs/config.md is current.

Parsing only: no model, tokenizer or dataset is loaded and nothing touches the network.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.util
import inspect
import json
import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"
ACCELERATE_DIR = RECIPES / "accelerate"
# A recipe's stage is its file name; `full_cot` is the sft stage on uncompressed traces.
STAGE_OF_FILE = {
    "problems": "problems",
    "traces": "traces",
    "verify": "verify",
    "compress": "compress",
    "compress_real": "compress",
    "sft": "sft",
    "full_cot": "sft",
    "grpo": "grpo",
    "eval": "eval",
    "eval_math500": "eval",
    "eval_aime": "eval",
    "pipeline": "pipeline",
    "quickstart": "pipeline",
}
TRAINING_STAGES = ("sft", "grpo")
# The keys of one entry of a pipeline recipe's `stages` (see cotx_rl.pipeline).
PIPELINE_STAGE_KEYS = {"id", "stage", "config", "args", "launcher", "accelerate_config"}
RUN_FILE = "run.yaml"  # a folder's run-level settings, included by its stage recipes
STAGE_RECIPES = sorted(
    path for path in RECIPES.glob("*/*.yaml") if path.parent != ACCELERATE_DIR and path.name != RUN_FILE
)
ACCELERATE_CONFIGS = sorted(ACCELERATE_DIR.glob("*.yaml"))


def recipe_id(path: Path) -> str:
    return str(path.relative_to(RECIPES))


@functools.cache
def load_generator():
    """scripts/gen_config_docs.py as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("gen_config_docs", REPO / "scripts" / "gen_config_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def repo_root(monkeypatch):
    """Recipes name their files relative to the repository root (pipeline checks that they exist)."""
    monkeypatch.chdir(REPO)


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """TrainingArguments sets up accelerate's process-wide state while parsing; leave none behind for other tests."""
    yield
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


def parse_recipe(path: Path, stage: str) -> tuple:
    """A recipe parsed as `cotx-rl <stage> --config <path>` parses it, with unknown keys an error."""
    module = importlib.import_module(f"cotx_rl.{stage}")
    argv = ["--config", str(path)]
    if stage in TRAINING_STAGES:
        # The GPU recipes ask for bf16, which TrainingArguments refuses on a machine without a bf16 GPU unless it is
        # told to train on the CPU. Nothing trains here.
        argv += ["--use_cpu", "true"]
    # A recipe's `env:` section sets environment variables while it is parsed; keep them out of other tests.
    with mock.patch.dict(os.environ):
        return module.make_parser().parse_args_and_config(argv, fail_with_unknown_args=True)


def recipe_keys(path: Path) -> dict:
    """A recipe's own keys (not those of its include, nor `include`, `env` and `output_root`)."""
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    for key in ("env", "include", "output_root"):
        config.pop(key, None)
    return config


def parsed_recipe(folder: str, name: str) -> tuple | None:
    path = RECIPES / folder / f"{name}.yaml"
    return parse_recipe(path, STAGE_OF_FILE[name]) if path.exists() else None


def test_recipe_folders_hold_only_stage_recipes():
    assert {"tiny", "qwen2.5-1.5b", "deepseek-r1-distill-qwen-1.5b", "accelerate"} <= {
        p.name for p in RECIPES.iterdir() if p.is_dir()
    }
    # Every YAML file must be parsed by some test below: a name that maps to no stage would be skipped silently.
    unknown = [recipe_id(path) for path in STAGE_RECIPES if path.stem not in STAGE_OF_FILE]
    assert not unknown, f"recipes whose file name names no stage ({sorted(STAGE_OF_FILE)}): {unknown}"
    assert not list(RECIPES.glob("*/*.yml")), "use the .yaml suffix, so that the recipe tests find the file"


@pytest.mark.parametrize("stage", sorted(set(STAGE_OF_FILE.values())))
def test_stage_dataclasses_do_not_share_a_key(stage):
    # argparse refuses a flag defined twice, so a key shared by two dataclasses of one stage breaks its parser.
    assert load_generator().key_clashes(stage) == []


@pytest.mark.parametrize("path", STAGE_RECIPES, ids=recipe_id)
def test_recipe_parses_with_its_stage_parser(path):
    stage = STAGE_OF_FILE[path.stem]
    parsed = parse_recipe(path, stage)
    assert [type(obj) for obj in parsed] == load_generator().stage_dataclasses(stage)
    for key in recipe_keys(path):
        assert any(key in {f.name for f in dataclasses.fields(obj)} for obj in parsed), (key, stage)


@pytest.mark.parametrize(
    ("stage", "recipe", "typo"),
    [
        ("problems", "tiny/problems.yaml", "num_trian"),
        ("sft", "tiny/sft.yaml", "learning_rat"),
        ("grpo", "qwen2.5-1.5b/grpo.yaml", "num_generation"),
    ],
)
def test_a_misspelled_key_fails(tmp_path, stage, recipe, typo):
    config = yaml.safe_load((RECIPES / recipe).read_text(encoding="utf-8"))
    config[typo] = 1
    path = tmp_path / f"{stage}.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    (tmp_path / RUN_FILE).write_text((RECIPES / recipe).with_name(RUN_FILE).read_text(encoding="utf-8"))
    with pytest.raises(ValueError, match=f"unknown key {typo!r}"):
        parse_recipe(path, stage)


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*/grpo.yaml")), ids=recipe_id)
def test_grpo_reward_kwargs_are_constructor_parameters(path):
    from rewards.registry import resolve

    script_args = parse_recipe(path, "grpo")[0]
    for name in script_args.reward_funcs:
        resolve(name)  # an unknown reward name fails here, not hours into a run
    for name, params in script_args.reward_kwargs.items():
        assert name in script_args.reward_funcs, f"reward_kwargs names {name!r}, which is not in reward_funcs"
        accepted = set(inspect.signature(resolve(name)).parameters)
        assert set(params) <= accepted, f"{name} takes {sorted(accepted)}, the recipe gives {sorted(params)}"


@pytest.mark.parametrize("folder", sorted(p.parent.name for p in RECIPES.glob("*/pipeline.yaml")))
def test_pipeline_stages_fit_their_recipes_and_launchers(folder):
    (pipeline_args,) = parse_recipe(RECIPES / folder / "pipeline.yaml", "pipeline")
    for spec in pipeline_args.stages:
        # PipelineArguments checks the keys a stage needs but ignores any others, so a misspelled one is lost there.
        assert set(spec) <= PIPELINE_STAGE_KEYS, (
            f"{spec['id']}: unknown keys {sorted(set(spec) - PIPELINE_STAGE_KEYS)}"
        )
        assert Path(spec["config"]).stem in STAGE_OF_FILE, spec
        assert STAGE_OF_FILE[Path(spec["config"]).stem] == spec["stage"], spec
        if spec.get("accelerate_config"):
            assert spec.get("launcher") == "accelerate", f"{spec['id']}: accelerate_config without the launcher"
            assert Path(spec["accelerate_config"]).parent == ACCELERATE_DIR.relative_to(REPO), spec
            assert Path(spec["accelerate_config"]).is_file(), spec
        if spec.get("accelerate_config") and spec["stage"] in TRAINING_STAGES:
            launcher = yaml.safe_load(Path(spec["accelerate_config"]).read_text(encoding="utf-8"))
            training_args = parse_recipe(Path(spec["config"]), spec["stage"])[1]
            # Both name a precision, and TrainingArguments takes the launcher's whenever the recipe leaves bf16 off:
            # a recipe that says `bf16: false` under a bf16 launcher config trains in bf16 all the same.
            assert bool(training_args.bf16) == (launcher["mixed_precision"] == "bf16"), spec
        if spec["stage"] == "grpo":
            check_grpo_batch(Path(spec["config"]), spec.get("accelerate_config"))


def check_grpo_batch(recipe: Path, accelerate_config: str | None) -> None:
    """What `cotx_rl.grpo.check_settings` checks at launch, with the process count of the launcher config."""
    _, training_args, _, run_args = parse_recipe(recipe, "grpo")
    processes = yaml.safe_load(Path(accelerate_config).read_text())["num_processes"] if accelerate_config else 1
    completions = training_args.per_device_train_batch_size * processes * training_args.gradient_accumulation_steps
    assert completions % training_args.num_generations == 0, (recipe, completions, training_args.num_generations)
    needed = max(run_args.budget_grid) + run_args.answer_tokens
    assert training_args.max_completion_length >= needed, (recipe, training_args.max_completion_length, needed)


@pytest.mark.parametrize("folder", sorted({p.parent.name for p in STAGE_RECIPES}))
def test_run_level_settings_are_written_once_per_folder(folder):
    from cotx_rl.config import RUN_LEVEL_KEYS

    run_file = RECIPES / folder / RUN_FILE
    run_settings = yaml.safe_load(run_file.read_text(encoding="utf-8"))
    run_keys = set(run_settings)
    assert run_keys <= {*RUN_LEVEL_KEYS, "env"}, run_keys
    assert {"output_root", "budget_grid", "answer_tokens"} <= run_keys
    for path in (RECIPES / folder).glob("*.yaml"):
        if path.name == RUN_FILE:
            continue
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert raw.get("include") == RUN_FILE, f"{recipe_id(path)} does not include {RUN_FILE}"
        assert not set(raw) & (set(RUN_LEVEL_KEYS) - {"output_root"}), f"{recipe_id(path)} repeats a run-level key"
        assert run_settings["output_root"] not in path.read_text(encoding="utf-8"), (
            f"{recipe_id(path)} writes the output root by hand; use ${{output_root}}"
        )
    sft = parsed_recipe(folder, "sft")
    compress_run = parsed_recipe(folder, "compress")
    if sft is not None and compress_run is not None and sft[1].max_length is not None:
        # The longest examples hold the largest budget of thinking tokens, plus the prompt and the answer.
        grid = compress_run[-1].budget_grid
        assert sft[1].max_length > max(grid), (sft[1].max_length, grid)


@pytest.mark.parametrize("path", ACCELERATE_CONFIGS, ids=lambda p: p.name)
def test_accelerate_config_loads(path):
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
    from accelerate.commands.launch import launch_command_parser

    text = path.read_text(encoding="utf-8")
    assert text.startswith("# "), "start with a comment that says what the config is for"
    config = yaml.safe_load(text)
    for key in ("compute_environment", "distributed_type", "num_processes", "num_machines", "mixed_precision"):
        assert key in config, key
    assert config["num_processes"] >= 1 and config["mixed_precision"] in ("no", "fp16", "bf16")
    # accelerate's own loader rejects unknown top-level keys and unknown distributed types.
    loaded = load_config_from_file(str(path))
    assert isinstance(loaded, ClusterConfig) and loaded.num_processes == config["num_processes"]
    # Nested keys are copied into `accelerate launch` options without any check, so a typo there is ignored silently.
    options = {action.dest for action in launch_command_parser()._actions}
    nested = [*config.get("deepspeed_config", {}), *config.get("fsdp_config", {})]
    assert not [key for key in nested if key not in options], nested
    if config["distributed_type"] in ("DEEPSPEED", "FSDP"):
        assert nested, "a DeepSpeed or FSDP config needs its deepspeed_config or fsdp_config"


def test_cpu2_config_asks_for_two_cpu_processes():
    config = yaml.safe_load((ACCELERATE_DIR / "cpu2.yaml").read_text(encoding="utf-8"))
    assert config["use_cpu"] is True
    assert config["num_processes"] == 2 and config["num_machines"] == 1
    assert config["mixed_precision"] == "no"


@pytest.mark.slow
def test_cpu2_config_launches_two_gloo_ranks(tmp_path):
    script = tmp_path / "ranks.py"
    script.write_text(
        "import json, os, sys\n"
        "from accelerate import PartialState\n"
        "state = PartialState(cpu=True)\n"  # what TrainingArguments(use_cpu=True) asks for
        "path = os.path.join(sys.argv[1], f'rank{state.process_index}.json')\n"
        "json.dump({'n': state.num_processes, 'type': str(state.distributed_type), 'backend': state.backend},"
        " open(path, 'w'))\n",
        encoding="utf-8",
    )
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ACCELERATE_DIR / "cpu2.yaml")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*command, str(script), str(tmp_path)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    ranks = [json.loads((tmp_path / f"rank{i}.json").read_text()) for i in range(2)]
    assert ranks == [{"n": 2, "type": "DistributedType.MULTI_CPU", "backend": "gloo"}] * 2


def test_every_project_key_has_help_text():
    generator = load_generator()
    from cotx_rl.cli import STAGES

    missing = [
        f"{cls.__name__}.{field.name}"
        for stage in STAGES
        for cls in generator.stage_dataclasses(stage)
        if generator.is_project_dataclass(cls)
        for field in dataclasses.fields(cls)
        if not field.metadata.get("help")
    ]
    assert not missing


def test_config_docs_are_current():
    committed = (REPO / "docs" / "config.md").read_text(encoding="utf-8")
    assert committed == load_generator().render(), "docs/config.md is stale: run python scripts/gen_config_docs.py"
