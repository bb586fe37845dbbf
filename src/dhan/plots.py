"""The paper's figures from run directories: training curves (Figure 5) and category attention (Figure 4).

matplotlib is used with the Agg backend (files only, no display), imported when a figure is drawn.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dhan.errors import UserError


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def read_metrics_log(run: Path) -> list[dict[str, Any]]:
    path = run / "metrics.jsonl"
    if not path.is_file():
        raise UserError(f"{path}: no such file; is {run} a run directory made by `dhan train`?")
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return lines


def run_label(run: Path) -> str:
    try:
        cfg = json.loads((run / "config.json").read_text())
        return f"{cfg['model_name']} seed {cfg['train']['seed']}"
    except (OSError, KeyError, json.JSONDecodeError):
        return run.name


def plot_training_curves(runs: Sequence[Path], out: Path, labels: Sequence[str] | None = None) -> Path:
    """Training loss and selection-split AUC against steps, one line per run, in one PNG (paper Figure 5)."""
    plt = _pyplot()
    fig, (ax_loss, ax_auc) = plt.subplots(1, 2, figsize=(11, 4))
    split = "valid"
    for i, run in enumerate(runs):
        lines = read_metrics_log(Path(run))
        label = labels[i] if labels else run_label(Path(run))
        steps = [r["step"] for r in lines]
        split = lines[0].get("eval_split", "valid") if lines else split
        loss = [r.get("train_loss") for r in lines]
        aucs = [r.get(f"{split}_auc") for r in lines]
        ax_loss.plot([s for s, v in zip(steps, loss, strict=True) if v is not None], [v for v in loss if v is not None],
                     marker=".", label=label)  # fmt: skip
        ax_auc.plot([s for s, v in zip(steps, aucs, strict=True) if v is not None], [v for v in aucs if v is not None],
                    marker=".", label=label)  # fmt: skip
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("training loss (mean since previous evaluation)")
    ax_auc.set_xlabel("step")
    biased = " (selected on test: biased)" if split == "test" else ""
    ax_auc.set_ylabel(f"{split} AUC{biased}")
    for ax in (ax_loss, ax_auc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Training loss and AUC")
    return _save(plt, fig, out)


def plot_group_attention(names: Sequence[str], weights: Sequence[float], title: str, out: Path) -> Path:
    """A bar chart of one user's attention over the groups (categories) of their history (paper Figure 4)."""
    plt = _pyplot()
    order = sorted(range(len(names)), key=lambda i: -weights[i])
    fig, ax = plt.subplots(figsize=(max(5.0, 0.6 * len(names) + 2), 4))
    ax.bar([names[i] for i in order], [weights[i] for i in order], color="tab:blue")
    ax.set_ylabel("attention weight")
    ax.set_title(title, fontsize=10)
    ax.tick_params(axis="x", labelrotation=45)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
    return _save(plt, fig, out)


def _save(plt: Any, fig: Any, out: Path) -> Path:
    """Lay out, write the PNG (creating its directory) and free the figure."""
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
