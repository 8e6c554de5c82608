"""Evaluation plots from a `report.json` payload (matplotlib, written as PNG)."""

from __future__ import annotations

from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, figure, axes, path: Path) -> Path:
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def pareto_plot(report: dict, path: Path) -> Path:
    """Accuracy against mean thinking tokens: one line per model and budgeted mode, points for auto and no budget."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(7, 5))
    for name, modes in report["models"].items():
        for mode, marker in (("exact", "o-"), ("max", "s--")):
            entries = [modes[mode][b] for b in sorted(modes.get(mode, {}), key=int)]
            if entries:
                axes.plot(
                    [e["mean_thinking_tokens"] for e in entries], [100 * e["accuracy"] for e in entries], marker,
                    label=f"{name} {mode}",
                )  # fmt: skip
        for mode, marker in (("auto", "*"), ("unbudgeted", "D")):
            entry = modes.get(mode)
            if entry:
                axes.plot(
                    entry["mean_thinking_tokens"],
                    100 * entry["accuracy"],
                    marker,
                    markersize=11,
                    label=f"{name} {mode}",
                )
    axes.set_xlabel("mean thinking tokens")
    axes.set_ylabel("accuracy (%)")
    axes.set_title("Accuracy against thinking tokens")
    return _save(plt, figure, axes, path)


def budget_plot(report: dict, path: Path) -> Path:
    """Requested budget against the thinking tokens actually used, per model and mode, with the y = x line."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6, 5))
    grid = report["budget_grid"]
    axes.plot(grid, grid, "k:", label="requested")
    for name, modes in report["models"].items():
        for mode, marker in (("exact", "o-"), ("max", "s--")):
            budgets = sorted(modes.get(mode, {}), key=int)
            if budgets:
                axes.plot(
                    [int(b) for b in budgets], [modes[mode][b]["mean_thinking_tokens"] for b in budgets], marker,
                    label=f"{name} {mode}",
                )  # fmt: skip
    axes.set_xlabel("requested budget (tokens)")
    axes.set_ylabel("mean thinking tokens used")
    return _save(plt, figure, axes, path)


def difficulty_plot(report: dict, path: Path) -> Path:
    """Thinking tokens by difficulty: auto mode of each budget student, and the full-CoT student without budget."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6, 5))
    for name, modes in report["models"].items():
        for mode in ("auto", "unbudgeted"):
            levels = (modes.get(mode) or {}).get("by_difficulty", {})
            if not levels or (mode == "unbudgeted" and name != "full_cot"):
                continue
            keys = sorted(levels, key=lambda k: float(k) if k.replace(".", "", 1).isdigit() else float("inf"))
            axes.plot(keys, [levels[k]["mean_thinking_tokens"] for k in keys], "o-", label=f"{name} {mode}")
    axes.set_xlabel("difficulty")
    axes.set_ylabel("mean thinking tokens")
    axes.set_title("Thinking tokens by difficulty")
    return _save(plt, figure, axes, path)


def save_plots(report: dict, output_dir: Path) -> list[Path]:
    output_dir.mkdir(parents=True, exist_ok=True)
    return [
        pareto_plot(report, output_dir / "pareto.png"),
        budget_plot(report, output_dir / "budget_fidelity.png"),
        difficulty_plot(report, output_dir / "auto_by_difficulty.png"),
    ]
