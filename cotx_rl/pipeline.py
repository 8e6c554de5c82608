"""Stage `pipeline`: every stage from one recipe, in order, skipping the stages already done.

The recipe lists the stages, each with its own stage recipe (so every stage also runs alone):

```yaml
include: run.yaml          # output_root, budget_grid, answer_tokens, seed: the run-level settings
stages:
  - {id: problems, stage: problems, config: recipes/tiny/problems.yaml}
  - {id: full_cot, stage: sft, config: recipes/tiny/full_cot.yaml, args: ["--num_train_epochs", "1"]}
```

Run-level settings given to the pipeline (`--output_root`, `--budget_grid`, `--answer_tokens`, `--seed`, on the command
line or in its recipe) reach every stage that uses them, so `cotx-rl pipeline --config ... --seed 1 --output_root
outputs/tiny-seed1` is a second run of everything with another seed, in its own folder.

A stage is done once it has finished: the pipeline then writes `<output_dir>/.done/<id>`. A rerun after a crash
continues at the first stage not done (a training stage killed mid-way resumes from its last checkpoint when its
recipe sets `resume_from_checkpoint`). `force: true` (or `--force true`) runs everything again; `from_stage: <id>`
runs that stage and all after it again; `until: <id>` stops after that stage.

Stages run in this process by default (`launcher: python`), or as `accelerate launch` subprocesses
(`launcher: accelerate`, with `accelerate_config`) for multi-GPU training. A stage's bad input stops the pipeline with
that stage's one-line message, prefixed with the stage id (exit code 2); Ctrl-C stops it with exit code 130, and the
stage it stopped is not marked done, so a rerun starts there.
"""

from __future__ import annotations

import json
import logging
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from cotx_rl.cli import STAGES, run_stage
from cotx_rl.config import declared_keys
from cotx_rl.io import StageInputError, check_writable_output, write_json

logger = logging.getLogger(__name__)


@dataclass
class PipelineArguments:
    """Every field is a key of a pipeline recipe."""

    output_dir: str | None = field(
        default=None, metadata={"help": "Folder for the `.done/` markers and timings (default: output_root)."}
    )
    output_root: str | None = field(
        default=None, metadata={"help": "Run-level: the run's output folder, `${output_root}` in every stage recipe."}
    )
    budget_grid: list[int] | None = field(
        default=None, metadata={"help": "Run-level: the budget grid, passed to every stage that uses one."}
    )
    answer_tokens: int | None = field(
        default=None, metadata={"help": "Run-level: the answer allowance, passed to every stage that uses one."}
    )
    seed: int | None = field(
        default=None, metadata={"help": "Run-level: the seed, passed to every stage that takes one."}
    )
    stages: list[dict] = field(
        default_factory=list,
        metadata={
            "help": "Ordered stages: {id, stage, config, args (extra flags, optional), launcher (python or "
            "accelerate), accelerate_config (optional)}."
        },
    )
    force: bool = field(default=False, metadata={"help": "Run every stage again, even those already done."})
    from_stage: str | None = field(default=None, metadata={"help": "Run this stage id and all after it again."})
    until: str | None = field(default=None, metadata={"help": "Stop after this stage id (default: run them all)."})

    def __post_init__(self):
        self.output_dir = self.output_dir or self.output_root
        if not self.output_dir:
            raise StageInputError("A pipeline recipe needs output_root (or output_dir) for its markers and timings.")
        if not self.stages:
            raise StageInputError("A pipeline recipe needs a non-empty `stages` list.")
        ids = []
        for index, spec in enumerate(self.stages):
            missing = [k for k in ("id", "stage", "config") if k not in spec]
            if missing:
                raise StageInputError(f"Pipeline stage #{index + 1} {spec!r} lacks {missing}.")
            if spec["stage"] not in STAGES or spec["stage"] == "pipeline":
                raise StageInputError(f"Pipeline stage {spec['id']!r} names unknown stage {spec['stage']!r}.")
            if not Path(spec["config"]).is_file():
                raise StageInputError(f"Pipeline stage {spec['id']!r}: recipe {spec['config']!r} does not exist.")
            if spec.get("launcher", "python") not in ("python", "accelerate"):
                raise StageInputError(f"Pipeline stage {spec['id']!r}: launcher must be python or accelerate.")
            ids.append(spec["id"])
        if len(set(ids)) != len(ids):
            raise StageInputError(f"Pipeline stage ids must be unique, got {ids}.")
        for key in ("from_stage", "until"):
            if getattr(self, key) is not None and getattr(self, key) not in ids:
                raise StageInputError(f"{key} {getattr(self, key)!r} is not a stage id of this pipeline ({ids}).")


FORWARDED_KEYS = ("budget_grid", "answer_tokens", "seed")


def run_level_flags(args: PipelineArguments, stage: str) -> list[str]:
    """The pipeline's run-level settings as flags for one stage: those it declares, and the output root."""
    import importlib

    declared = declared_keys(importlib.import_module(f"cotx_rl.{stage}").make_parser())
    flags = ["--output_root", args.output_root] if args.output_root else []
    for key in FORWARDED_KEYS:
        value = getattr(args, key)
        if value is not None and key in declared:
            flags += [f"--{key}", *(str(v) for v in value)] if isinstance(value, list) else [f"--{key}", str(value)]
    return flags


def stage_argv(spec: dict, run_flags: list[str] = ()) -> list[str]:
    """The stage's own recipe, then the run-level flags, then the stage's `args` (which win)."""
    return ["--config", spec["config"], *run_flags, *[str(a) for a in spec.get("args", [])]]


def run_in_subprocess(spec: dict, argv: list[str]) -> None:
    """Run one stage under `accelerate launch`; its exit code 2 (bad input, already explained on stderr) and 130
    (interrupted) stay what they are, any other failure is an error."""
    command = ["accelerate", "launch"]
    if spec.get("accelerate_config"):
        command += ["--config_file", spec["accelerate_config"]]
    command += ["-m", f"cotx_rl.{spec['stage']}", *argv]
    logger.info("Running %s", shlex.join(command))
    completed = subprocess.run(command, check=False)
    if completed.returncode == 2:
        raise StageInputError(f"stopped on bad input (its message is above): {shlex.join(command)}")
    if completed.returncode in (130, -2):
        raise KeyboardInterrupt
    if completed.returncode:
        raise RuntimeError(f"Stage {spec['id']!r} failed with exit code {completed.returncode}: {shlex.join(command)}")


def main(args: PipelineArguments) -> dict[str, float]:
    """Run the stages not done yet; returns the seconds each stage run now took."""
    check_writable_output(args.output_dir, "Pipeline output folder", folder=True)
    done_dir = Path(args.output_dir) / ".done"
    done_dir.mkdir(parents=True, exist_ok=True)
    rerun = args.force
    timings: dict[str, float] = {}
    for spec in args.stages:
        rerun = rerun or spec["id"] == args.from_stage
        marker = done_dir / spec["id"]
        if marker.exists() and not rerun:
            logger.info("Stage %s already done (%s); skipping.", spec["id"], marker)
            if spec["id"] == args.until:
                break
            continue
        marker.unlink(missing_ok=True)
        argv = stage_argv(spec, run_level_flags(args, spec["stage"]))
        logger.info("Stage %s: %s %s", spec["id"], spec["stage"], shlex.join(argv))
        started = time.perf_counter()
        try:
            if spec.get("launcher", "python") == "accelerate":
                run_in_subprocess(spec, argv)
            else:
                run_stage(spec["stage"], argv)
        except StageInputError as error:
            raise StageInputError(f"stage {spec['id']!r} ({spec['stage']}): {error}") from error
        except KeyboardInterrupt:
            logger.warning("Stage %s interrupted; it is not marked done, so a rerun starts at it.", spec["id"])
            raise
        timings[spec["id"]] = round(time.perf_counter() - started, 1)
        marker.write_text(f"{timings[spec['id']]}\n", encoding="utf-8")
        logger.info("Stage %s done in %.1f s.", spec["id"], timings[spec["id"]])
        if spec["id"] == args.until:
            break
    if timings:
        timings_path = Path(args.output_dir) / "timings.json"
        earlier = json.loads(timings_path.read_text(encoding="utf-8")) if timings_path.exists() else {}
        write_json(timings_path, {**earlier, **timings})
    return timings


def make_parser():
    from cotx_rl.config import make_parser

    return make_parser(PipelineArguments)


if __name__ == "__main__":
    from cotx_rl.cli import main as cli

    raise SystemExit(cli(["pipeline", *sys.argv[1:]]))
