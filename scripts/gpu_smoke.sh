#!/usr/bin/env bash
# GPU smoke test: the shipped real recipes on tiny students of the real architectures (Qwen2.5, DeepSeek-R1-Distill-Qwen
# and Qwen3, each with its real tokenizer and chat template), in bf16 on one GPU: LoRA SFT, GRPO and eval, a few
# steps each. Under 5 minutes on one GPU; prints one PASS/FAIL line per step and a summary, and exits 1 on any FAIL.
#
#   bash scripts/gpu_smoke.sh [--cpu] [--students "qwen2.5 r1-distill qwen3"] [--tokenizers DIR] [--wheels DIR]
#
# --cpu          the same runs in float32 on the CPU (what the test suite runs; no GPU needed).
# --students     which tiny students to run (default: all three).
# --tokenizers   the real tokenizers (default: ../shared/data/real/tokenizers, see shared/data/README.md).
# --wheels       a folder of wheels to install first, offline (`pip install --no-index --find-links DIR`).
#
# Offline machines (torch, transformers and accelerate preinstalled, no network): on a machine with network, first
#   pip download --no-deps -d wheels/ trl==1.16.0 peft==0.21.2 datasets==5.2.0 wandb==0.31.0 \
#       latex2sympy2_extended==1.11.0 [and any other missing dependency `pip check` names]
# and copy wheels/ with the repository; this script then installs them and the repository itself with
#   pip install --no-index --find-links wheels/ --no-deps ... && pip install --no-deps --no-build-isolation -e .
# Nothing is downloaded at run time: the students are built here from configs, HF_HUB_OFFLINE=1 throughout.
# With vLLM installed and a GPU, GRPO generates with vLLM (`use_vllm: true`, colocated, the LoRA SFT student merged
# first) and eval with `engine: vllm`; without it, both use transformers.
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEVICE=gpu
STUDENTS="qwen2.5 r1-distill qwen3"
TOKENIZERS="$REPO/../shared/data/real/tokenizers"
WHEELS=""
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu) DEVICE=cpu; shift ;;
    --students) STUDENTS="$2"; shift 2 ;;
    --tokenizers) TOKENIZERS="$2"; shift 2 ;;
    --wheels) WHEELS="$2"; shift 2 ;;
    *) echo "gpu_smoke.sh: unknown option $1" >&2; exit 2 ;;
  esac
done

export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
PYTHON="${PYTHON:-python}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/cotx_gpu_smoke.XXXXXX")"
RESULTS=()
FAILED=0

step() {  # step NAME COMMAND...: run, log to $WORK/NAME.log, record PASS or FAIL with the seconds it took
  local name="$1"; shift
  local start=$SECONDS
  mkdir -p "$(dirname "$WORK/$name.log")"
  if "$@" >"$WORK/$name.log" 2>&1; then
    RESULTS+=("PASS  $name ($((SECONDS - start)) s)")
  else
    RESULTS+=("FAIL  $name ($((SECONDS - start)) s): see $WORK/$name.log")
    FAILED=1
    tail -20 "$WORK/$name.log" >&2
  fi
}

if [ -n "$WHEELS" ]; then
  step install bash -c "$PYTHON -m pip install --no-index --find-links '$WHEELS' --no-deps '$WHEELS'/*.whl && \
    $PYTHON -m pip install --no-deps --no-build-isolation -e '$REPO'"
fi

if [ "$DEVICE" = cpu ]; then
  HARDWARE=(--use_cpu true --bf16 false --dtype float32 --gradient_checkpointing false)
  EVAL_HARDWARE=(--engine transformers --device cpu --dtype float32)
  USE_VLLM=false
else
  HARDWARE=(--bf16 true --dtype bfloat16 --gradient_checkpointing true)
  EVAL_HARDWARE=(--engine auto --device cuda --dtype bfloat16)
  USE_VLLM=$($PYTHON -c "import importlib.util as u, torch; print(str(bool(u.find_spec('vllm')) and torch.cuda.is_available()).lower())")
  step gpu_visible "$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'no GPU visible'; print(torch.cuda.get_device_name())"
fi
COMMON=(--report_to none --dataloader_num_workers 0)

step data "$PYTHON" - "$WORK" <<'PY'
import json, sys
from pathlib import Path
work = Path(sys.argv[1])
rows = [{"id": f"p{i}", "question": f"What is {i} + 3?", "answer": str(i + 3), "budget_mode": ("exact", "max", "auto")[i % 3],
         "budget_tokens": 24, "reasoning": f"We add {i} and 3, which gives {i + 3}.", "response": f"\\boxed{{{i + 3}}}"}
        for i in range(8)]
(work / "examples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
(work / "problems.jsonl").write_text("".join(json.dumps({k: r[k] for k in ("id", "question", "answer")}) + "\n" for r in rows))
PY

for student in $STUDENTS; do
  case "$student" in
    r1-distill) RECIPES="$REPO/recipes/deepseek-r1-distill-qwen-1.5b" ;;
    *) RECIPES="$REPO/recipes/qwen2.5-1.5b" ;;
  esac
  OUT="$WORK/$student"
  step "$student/build" "$PYTHON" -c "
import sys; sys.path.insert(0, '$REPO/tests')
from pathlib import Path
from real_students import REAL_STUDENTS, build_real_student
build_real_student(REAL_STUDENTS['$student'], Path('$TOKENIZERS'), Path('$OUT/student'))"
  step "$student/sft-lora" "$PYTHON" -m cotx_rl sft --config "$RECIPES/sft.yaml" --model_name_or_path "$OUT/student" \
    --dataset_path "$WORK/examples.jsonl" --output_dir "$OUT/sft" --max_steps 3 --max_length 1024 \
    --per_device_train_batch_size 4 --gradient_accumulation_steps 1 --save_strategy no "${HARDWARE[@]}" "${COMMON[@]}"
  step "$student/grpo" "$PYTHON" -m cotx_rl grpo --config "$RECIPES/grpo.yaml" --sft_model_path "$OUT/sft" \
    --problems_path "$WORK/problems.jsonl" --output_dir "$OUT/grpo" --max_steps 2 --per_device_train_batch_size 4 \
    --gradient_accumulation_steps 1 --num_generations 4 --max_completion_length 48 --budget_grid 16 32 \
    --answer_tokens 8 --use_vllm "$USE_VLLM" --vllm_gpu_memory_utilization 0.3 --vllm_max_model_length 1024 \
    --save_strategy no "${HARDWARE[@]}" "${COMMON[@]}"
  step "$student/eval" "$PYTHON" -m cotx_rl eval --config "$RECIPES/eval.yaml" --test_path "$WORK/problems.jsonl" \
    --output_dir "$OUT/eval" --models "{\"sft\": \"$OUT/sft\", \"grpo\": \"$OUT/grpo\"}" --limit 4 \
    --max_new_tokens 24 --batch_size 4 --budget_grid 16 32 --answer_tokens 8 --report_to none "${EVAL_HARDWARE[@]}"
done

echo
echo "gpu_smoke ($DEVICE, vLLM: ${USE_VLLM}) in $WORK:"
printf '  %s\n' "${RESULTS[@]}"
if [ "$FAILED" = 0 ]; then echo "PASS"; else echo "FAIL"; fi
exit "$FAILED"
