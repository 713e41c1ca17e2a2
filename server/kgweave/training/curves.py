"""Training curves as a PNG: loss per epoch and validation MRR."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_training_curve(history: list[dict[str, Any]], path: Path, title: str) -> Path:
    """Draw loss (left axis) and validation MRR (right axis) against epochs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    losses = [h["loss"] for h in history]
    evals = [(h["epoch"], h["valid_mrr"]) for h in history if h.get("valid_mrr") is not None]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    ax.plot(epochs, losses, color="tab:blue", label="training loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss", color="tab:blue")
    ax.grid(alpha=0.3)
    if evals:
        ax2 = ax.twinx()
        ax2.plot(*zip(*evals, strict=True), color="tab:orange", marker="o", label="valid MRR")
        ax2.set_ylabel("filtered MRR (valid)", color="tab:orange")
        ax2.set_ylim(0, 1)
    return save_figure(fig, ax, path, title)


def save_figure(fig: Any, ax: Any, path: Path, title: str) -> Path:
    """Title, layout, the PNG at ``path`` (its folder made); the figure is closed."""
    import matplotlib.pyplot as plt

    ax.set_title(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
