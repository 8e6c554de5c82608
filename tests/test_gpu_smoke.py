"""scripts/gpu_smoke.sh: valid bash, and its CPU variant (the same steps in float32) passes on a tiny student."""

import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_smoke.sh"


def test_gpu_smoke_script_is_valid_bash():
    done = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_gpu_smoke_cpu_variant_passes(shared_data, tmp_path):
    env = {**os.environ, "TMPDIR": str(tmp_path), "OMP_NUM_THREADS": "1"}
    command = ["bash", str(SCRIPT), "--cpu", "--students", "r1-distill",
               "--tokenizers", str(shared_data / "real" / "tokenizers")]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert lines[-1] == "PASS"
    assert [line.split()[1] for line in lines if line.strip().startswith("PASS ")] == [
        "data", "r1-distill/build", "r1-distill/sft-lora", "r1-distill/grpo", "r1-distill/eval"
    ]  # fmt: skip
