"""``loss.png``: training and validation loss against the step (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path

from tinyllm.atomic import atomic_open

__all__ = ["plot_losses"]


def plot_losses(records: list[dict], path, title: str = "") -> None:
    """Draw ``train_loss`` and ``val_loss`` of ``records`` (metrics.jsonl lines) into ``path``,
    atomically (a temporary PNG in the same folder, renamed into place)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI

    path = Path(path)
    steps = [r["step"] for r in records]
    fig = Figure(figsize=(6, 4), dpi=100)
    ax = fig.add_subplot()
    for key, label in (("train_loss", "train"), ("val_loss", "validation")):
        ax.plot(steps, [r.get(key) for r in records], marker="o", markersize=3, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png")
