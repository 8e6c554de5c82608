"""Seconds per GRPO step, the cotx way against plain TRL, on the same student, data and settings.

- cotx: the `grpo` stage's building blocks: prompts with drawn budget modes (`cotx_rl.grpo.budgeted_prompts`), the
  recipe's composite reward with the student's tokenizer (`cotx_rl.grpo.build_rewards`, which also logs per-mode
  budget metrics through TRL's `log_metric` every step), and TRL's `GRPOTrainer`.
- plain: TRL's `GRPOTrainer` on the same questions without budget directives, with a seeded random reward. Random
  rather than constant: a constant reward gives every group zero spread, and a trainer is free to take shortcuts on
  such batches (TRL 1.16 takes none, but the comparison should not rest on that); a seeded draw costs microseconds,
  so it still measures the trainer alone.
- plain+dir: plain, on the cotx prompts (budget directives included). The directive adds about 7 prompt tokens, which
  every forward pass pays; this control tells that cost apart from what the cotx code adds (rewards, metrics).

Every run loads one student saved once (a fresh embedded student at the default size unless `--model` names an SFT
output), and every completion runs to `max_completion_length` (`min_new_tokens` in TRL's `generation_kwargs`, which
TRL passes to `generate` as the generation config): an untrained student stops at random places, and lengths that
differ between runs would swamp the overhead measured. Step time is taken with a `TrainerCallback` from
`on_step_begin` to `on_step_end` (generation, rewards, loss and optimizer step), the median over the timed steps after
the warm-up steps. With `--rounds 2` the runs go in order, then in reverse, so that drift in the load of a shared
machine falls on every way alike.

This module imports torch, transformers and TRL inside its functions only: the correctness reward's worker processes
import the main module when they start (multiprocessing's rule), and with those imports at the top each worker took
5 s to start instead of under 1 s, a cost the `grpo` stage, whose main module is light, does not pay.

Usage: `python benchmarks/trainer_overhead.py [--steps 10] [--warmup-steps 2] [--rounds 1] [--threads 1] [--model PATH]`.
"""

from __future__ import annotations

import argparse
import functools
import logging
import random
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

from cotx_rl import grpo
from cotx_rl.arithmetic import make_problems
from cotx_rl.config import RunArguments
from cotx_rl.models import load_policy, load_tokenizer
from cotx_rl.tiny import build_tiny_student, build_tiny_tokenizer
from rewards import CompositeReward

if TYPE_CHECKING:
    from trl import GRPOConfig, GRPOTrainer

# The tiny recipe's reward settings (recipes/tiny/grpo.yaml), so that the cotx run pays what a real run pays.
RECIPE_REWARD_KWARGS = {
    "composite_reward": {"format_weight": 0.1, "efficiency_weight": 0.0, "efficiency_max_tokens": 96}
}


def step_timer():
    """A `TrainerCallback` that records the wall seconds of every optimizer step, and of the parts `timed` wraps."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.steps: list[float] = []
            self.parts: dict[str, list[float]] = defaultdict(list)
            self._current: dict[str, float] = defaultdict(float)
            self._start = 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            self._current = defaultdict(float)
            self._start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.steps.append(time.perf_counter() - self._start)
            for name in ("generate", "rewards"):
                self.parts[name].append(self._current[name])

        def timed(self, name: str, func):
            def wrapper(*args, **kwargs):
                start = time.perf_counter()
                try:
                    return func(*args, **kwargs)
                finally:
                    self._current[name] += time.perf_counter() - start

            return wrapper

    return StepTimer()


class SeededRandomReward:
    """Uniform rewards from a seeded generator: free to compute, and never a zero-spread group."""

    __name__ = "seeded_random_reward"

    def __init__(self, seed: int):
        self.rng = random.Random(seed)

    def __call__(self, completions, **kwargs):
        return [self.rng.random() for _ in completions]


def save_student(folder: Path) -> None:
    tokenizer = build_tiny_tokenizer()
    build_tiny_student(tokenizer, seed=0).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def training_args(output_dir: Path, options) -> GRPOConfig:
    from trl import GRPOConfig

    return GRPOConfig(
        output_dir=str(output_dir),
        max_steps=options.warmup_steps + options.steps,
        per_device_train_batch_size=options.batch_size,
        num_generations=options.num_generations,
        max_completion_length=options.max_completion_length,
        generation_kwargs={"min_new_tokens": options.max_completion_length},
        temperature=1.0,
        learning_rate=5e-5,
        lr_scheduler_type="constant",
        beta=0.0,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        disable_tqdm=True,
        seed=0,
    )


def script_args(model_dir: Path) -> grpo.GRPOScriptArguments:
    return grpo.GRPOScriptArguments(
        sft_model_path=str(model_dir), problems_path="(in memory)", reward_kwargs=RECIPE_REWARD_KWARGS
    )


def cotx_trainer(model_dir: Path, rows: list[dict], output_dir: Path, options) -> GRPOTrainer:
    from datasets import Dataset
    from trl import GRPOTrainer, ModelConfig

    script = script_args(model_dir)
    args = training_args(output_dir, options)
    grpo.check_settings(script, args, RunArguments(), num_processes=1)
    tokenizer = load_tokenizer(str(model_dir))
    model, _ = load_policy(str(model_dir), ModelConfig())
    return GRPOTrainer(
        model=model,
        reward_funcs=grpo.build_rewards(script, tokenizer),
        args=args,
        train_dataset=Dataset.from_list(grpo.budgeted_prompts(rows, script, RunArguments().budget_grid, args.seed)),
        processing_class=tokenizer,
    )


def plain_trainer(model_dir: Path, rows: list[dict], output_dir: Path, options, directives: bool = False):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if directives:  # the very prompts of the cotx run (same seed, same draws)
        prompts = [
            {"prompt": row["prompt"]}
            for row in grpo.budgeted_prompts(rows, script_args(model_dir), RunArguments().budget_grid, seed=0)
        ]
    else:
        prompts = [{"prompt": [{"role": "user", "content": row["question"]}]} for row in rows]
    return GRPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(model_dir),
        reward_funcs=SeededRandomReward(seed=0),
        args=training_args(output_dir, options),
        train_dataset=Dataset.from_list(prompts),
        processing_class=tokenizer,
    )


def run(build, model_dir: Path, rows: list[dict], output_dir: Path, options) -> dict:
    """Train one way for warm-up plus timed steps; the timed steps' figures, and what the completions were."""
    from transformers import PrinterCallback

    trainer = build(model_dir, rows, output_dir, options)
    timer = step_timer()
    trainer.add_callback(timer)
    # Logging every step is kept (it flushes the per-mode metrics), printing the logs is not: the table is the output.
    trainer.remove_callback(PrinterCallback)
    # Instance attributes shadow the methods, so each call is timed without touching TRL's code.
    trainer._generate_single_turn = timer.timed("generate", trainer._generate_single_turn)
    trainer._calculate_rewards = timer.timed("rewards", trainer._calculate_rewards)
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "completions/mean_length" in entry]
    tokenizer = trainer.processing_class
    prompts = [tokenizer.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
               for row in trainer.train_dataset]  # fmt: skip
    for reward in trainer.reward_funcs:
        if isinstance(reward, CompositeReward):  # its sympy workers would otherwise compete with the next run
            reward.correctness.close()
    skip = options.warmup_steps
    return {
        "step": timer.steps[skip:],
        "generate": timer.parts["generate"][skip:],
        "rewards": timer.parts["rewards"][skip:],
        "completion_tokens": statistics.mean(entry["completions/mean_length"] for entry in logged),
        "prompt_tokens": statistics.mean(len(ids) for ids in tokenizer(prompts)["input_ids"]),
    }


def main(options) -> None:
    import torch

    logging.getLogger("transformers").setLevel(logging.ERROR)
    # On a machine shared with other jobs, each of torch's intra-op threads waits at every op for a peer that the
    # scheduler has parked: the same generate took 0.5 s or 30 s from one step to the next with 2 threads on 2 busy
    # cores. One thread keeps the two runs comparable.
    torch.set_num_threads(options.threads)
    rows = make_problems(options.num_problems, "train", seed=0)
    ways = {
        "cotx": cotx_trainer,
        "plain": plain_trainer,
        "plain+dir": functools.partial(plain_trainer, directives=True),
    }
    order = [name for r in range(options.rounds) for name in (list(ways) if r % 2 == 0 else reversed(ways))]
    results: dict[str, list[dict]] = defaultdict(list)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(options.model) if options.model else Path(tmp) / "student"
        if not options.model:
            save_student(model_dir)
        for index, name in enumerate(order):
            results[name].append(run(ways[name], model_dir, rows, Path(tmp) / f"{name}-{index}", options))

    print(
        f"GRPO on CPU ({torch.get_num_threads()} threads): {options.batch_size} completions per step "
        f"({options.num_generations} per prompt) of {options.max_completion_length} tokens; "
        f"median of {options.steps} steps after {options.warmup_steps} warm-up, {options.rounds} round(s)"
    )
    header = f"{'way':10}{'s/step':>9}{'min':>8}{'max':>8}{'generate':>10}{'rewards':>10}{'prompt tok':>12}{'compl tok':>11}"
    print(header)
    print("-" * len(header))
    medians = {}
    for name in ways:
        runs = results[name]
        steps = [s for r in runs for s in r["step"]]
        medians[name] = statistics.median(steps)
        generate = statistics.median(s for r in runs for s in r["generate"])
        rewards = statistics.median(s for r in runs for s in r["rewards"])
        completion = statistics.mean(r["completion_tokens"] for r in runs)
        print(
            f"{name:10}{medians[name]:9.3f}{min(steps):8.3f}{max(steps):8.3f}{generate:10.3f}{rewards:10.4f}"
            f"{runs[0]['prompt_tokens']:12.1f}{completion:11.1f}"
        )
    ratio = medians["cotx"] / medians["plain"]
    print(f"ratio cotx / plain: {ratio:.3f} (target <= 1.10: {'met' if ratio <= 1.10 else 'NOT met'})")
    print(
        f"ratio cotx / plain+dir (same prompts, so rewards and metrics only): {medians['cotx'] / medians['plain+dir']:.3f}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10, help="Timed steps per run.")
    parser.add_argument("--warmup-steps", type=int, default=2, help="Steps run first and not timed.")
    parser.add_argument("--rounds", type=int, default=1, help="2 or more: every other round in reverse order.")
    parser.add_argument("--batch-size", type=int, default=32, help="Completions per step.")
    parser.add_argument("--num-generations", type=int, default=8)
    parser.add_argument("--max-completion-length", type=int, default=112)
    parser.add_argument("--num-problems", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads.")
    parser.add_argument("--model", help="A saved student (e.g. the sft stage's output); default: a fresh one.")
    main(parser.parse_args())
