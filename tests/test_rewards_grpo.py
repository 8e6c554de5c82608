"""The rewards plugged straight into TRL's GRPOTrainer, as a user would."""

import pytest
from datasets import Dataset

import rewards
from cotx_rl.budget import render_prompt
from cotx_rl.tiny import build_tiny_student


@pytest.mark.slow
def test_grpo_trainer_logs_every_reward(tiny_tokenizer, tmp_path):
    from trl import GRPOConfig, GRPOTrainer

    rows = [
        {"question": f"Compute {a} + {b}.", "answer": str(a + b), "budget_mode": mode, "budget_tokens": budget}
        for a, b, mode, budget in [
            (12, 3, "exact", 24),
            (40, 9, "max", 48),
            (7, 1, "auto", None),
            (30, 5, "exact", 48),
        ]
    ]
    dataset = Dataset.from_list(
        [
            {
                **r,
                "prompt": [
                    {"role": "user", "content": render_prompt(r["question"], r["budget_mode"], r["budget_tokens"])}
                ],
            }
            for r in rows
        ]
    )
    reward_funcs = [
        rewards.correctness_reward,
        rewards.BudgetFidelityReward(tokenizer=tiny_tokenizer),
        rewards.format_reward,
        rewards.CompositeReward(tokenizer=tiny_tokenizer, format_weight=0.1),
    ]
    args = GRPOConfig(
        output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=16, num_generations=4,
        max_completion_length=24, logging_steps=1, report_to="none", use_cpu=True, bf16=False,
        gradient_checkpointing=False, save_strategy="no", learning_rate=1e-3,
    )  # fmt: skip
    model = build_tiny_student(tiny_tokenizer, hidden_size=32, num_layers=1, num_heads=2)
    trainer = GRPOTrainer(
        model=model, reward_funcs=reward_funcs, args=args, train_dataset=dataset, processing_class=tiny_tokenizer
    )
    trainer.train()
    logged = {key for entry in trainer.state.log_history for key in entry}
    for name in ("correctness_reward", "budget_fidelity_reward", "format_reward", "composite_reward"):
        assert f"rewards/{name}/mean" in logged, sorted(logged)
    assert trainer.state.global_step == 2
    # The budget rewards report per-mode metrics through TRL's log_metric hook.
    assert {"budget/exact/abs_rel_error", "budget/max/in_budget_rate"} <= logged, sorted(logged)
