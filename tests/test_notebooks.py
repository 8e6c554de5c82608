"""The notebooks run end to end, offline on CPU, from a scratch folder that sees the repository's recipes."""

import ast
import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("notebooks")
    (folder / "recipes").symlink_to(REPO / "recipes")
    return folder


def execute(name: str, workdir: Path):
    notebook = nbformat.read(REPO / "notebooks" / name, as_version=4)
    NotebookClient(
        notebook, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}
    ).execute()
    return notebook


def outputs_of(notebook, kind: str) -> list:
    return [
        o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs if kind in o.get("data", {})
    ]


@pytest.mark.slow
def test_quickstart_runs_the_pipeline_and_shows_the_plots(workdir):
    notebook = execute("quickstart.ipynb", workdir)
    report = json.loads((workdir / "outputs/quickstart/eval/report.json").read_text())
    assert set(report["models"]) == {"full_cot", "truncation", "sft", "grpo"}
    assert len(outputs_of(notebook, "image/png")) == 3
    assert any("| sft | exact |" in o["data"]["text/markdown"] for o in outputs_of(notebook, "text/markdown"))
    for marker in ("problems", "traces", "verify", "compress", "sft", "full_cot", "grpo", "eval"):
        assert (workdir / "outputs/quickstart/.done" / marker).exists()


@pytest.mark.slow
def test_custom_reward_trains_and_plots_its_mean(workdir):
    notebook = execute("custom_reward.ipynb", workdir)
    assert len(outputs_of(notebook, "image/png")) == 1
    summary = outputs_of(notebook, "text/plain")[-1]["data"]["text/plain"]
    logged = ast.literal_eval(summary)
    assert logged["logged_steps"] == 6 and 0.0 <= logged["last_mean"] <= 1.0
