"""`cotx-rl <stage> --config recipe.yaml [--key value ...]`: one subcommand per stage of the data flow.

Each stage module exposes `make_parser()` (a TRL `TrlParser` over the stage's dataclasses) and `main(...)`, and runs
the same under `python -m cotx_rl.<stage>` and `accelerate launch -m cotx_rl.<stage>`.

What the user can fix ends in one line on stderr, without a traceback: bad input (`StageInputError`) and an output
that cannot be written (disk full, no permission, read-only disk: `OutputWriteError` or an `OSError` with one of
those causes) exit with code 2, Ctrl-C with `cotx-rl <stage>: interrupted` and code 130. Any other exception is a bug
and keeps its traceback.
"""

from __future__ import annotations

import errno
import importlib
import logging
import sys

from cotx_rl.io import OutputWriteError, StageInputError

STAGES = {
    "problems": "Load problems from a file or dataset, or make the embedded domain's problems.",
    "traces": "Have a teacher write reasoning traces for problems (resumable).",
    "verify": "Keep the traces whose final answer is correct; count drops by reason.",
    "compress": "Compress kept traces to every budget on the grid; label modes and auto budgets.",
    "sft": "Phase 1: supervised fine-tuning on budgeted examples (or full traces).",
    "grpo": "Phase 2: GRPO with the composite reward, starting from the SFT model.",
    "eval": "Accuracy and budget fidelity per mode and budget, with baselines, plots and a report.",
    "generate": "Answer your questions with a student and a budget, enforced at decode time (a hard stop).",
    "pipeline": "Run every stage from one recipe, skipping the stages already done.",
}


# Why a write fails when the fault is the machine's state, not the program: these become one line and exit code 2.
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG})
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a program stopped with Ctrl-C


def usage() -> str:
    lines = ["usage: cotx-rl <stage> --config <recipe.yaml> [--key value ...]", "", "stages:"]
    lines += [f"  {name:<10}{text}" for name, text in STAGES.items()]
    lines += ["", "`cotx-rl <stage> --help` lists every recipe key of a stage."]
    return "\n".join(lines)


def run_stage(stage: str, argv: list[str]):
    """Parse a stage's recipe and flags, then run its `main`."""
    module = importlib.import_module(f"cotx_rl.{stage}")
    try:
        parsed = module.make_parser().parse_args_and_config(argv)
    except StageInputError:
        raise
    except ValueError as error:  # a bad value in the recipe: the config classes (ours and TRL's) name it
        raise StageInputError(f"bad recipe or flags: {error}") from error
    return module.main(*parsed)


def configure_logging() -> None:
    """Show this project's INFO messages; other libraries keep their own handlers.

    A root handler (`logging.basicConfig`) would print every transformers line twice wherever
    transformers propagates to the root logger, which it does when the `CI` variable is set.
    """
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("cotx_rl", "rewards"):
        project_logger = logging.getLogger(name)
        if not project_logger.handlers:
            project_logger.addHandler(handler)
        project_logger.setLevel(logging.INFO)


def describe_os_error(error: OSError) -> str | None:
    """One line for an `OSError` the user can fix (naming the path when it is known), or None for any other."""
    if isinstance(error, OutputWriteError):
        return str(error)
    if error.errno not in WRITE_ERRNOS:
        return None
    where = f" ({str(error.filename)!r})" if error.filename else ""
    return f"{error.strerror or error}{where}; free some space, fix the permissions or choose another path."


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        sys.stdout.write(usage() + "\n")
        return 0
    stage, rest = argv[0], argv[1:]
    if stage not in STAGES:
        sys.stderr.write(f"cotx-rl: unknown stage {stage!r}.\n\n{usage()}\n")
        return 2
    configure_logging()
    try:
        run_stage(stage, rest)
    except StageInputError as error:
        sys.stderr.write(f"cotx-rl {stage}: {error}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(f"\ncotx-rl {stage}: interrupted\n")
        return EXIT_INTERRUPTED
    except OSError as error:
        message = describe_os_error(error)
        if message is None:
            raise
        sys.stderr.write(f"cotx-rl {stage}: {message}\n")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
