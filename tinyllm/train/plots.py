"""``loss.png``: the training loss at every logged step and the evaluations, against the step.

The training loss of single batches is noisy, so it is drawn twice: every logged value as a
faint point, and their exponential moving average as a line (``smooth``, the weight of the
newest value; the average is debiased like Adam's moments, so it starts at the first value).
The evaluations (mean loss over fixed batches of each split, ``metrics.jsonl``) are markers.
"""

from __future__ import annotations

from pathlib import Path

from tinyllm.atomic import atomic_open

__all__ = ["plot_losses", "smoothed"]


def smoothed(values, smooth: float = 0.2) -> list[float]:
    """The debiased exponential moving average of ``values`` (``smooth``: the new value's
    weight): ``m_t = (1 - s) m_{t-1} + s v_t``, reported as ``m_t / (1 - (1 - s)^t)``."""
    out, m, w = [], 0.0, 0.0
    for v in values:
        m = (1 - smooth) * m + smooth * v
        w = (1 - smooth) * w + smooth
        out.append(m / w)
    return out


def plot_losses(records: list[dict], path, title: str = "", train_log: list[dict] = ()) -> None:
    """Draw ``records`` (metrics.jsonl lines: ``train_loss``, ``val_loss``) and ``train_log``
    (train_loss.jsonl lines: ``loss`` every logged step) into ``path``, atomically (a temporary
    PNG in the same folder, renamed into place)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI

    path = Path(path)
    fig = Figure(figsize=(7, 4.2), dpi=100)
    ax = fig.add_subplot()
    if train_log:
        steps = [r["step"] for r in train_log]
        raw = [r["loss"] for r in train_log]
        ax.plot(steps, raw, ".", color="tab:blue", alpha=0.2, markersize=3,
                label="training batch (logged steps)")
        ax.plot(steps, smoothed(raw), color="tab:blue", lw=1.5, label="training, smoothed")
    steps = [r["step"] for r in records]
    for key, label, color in (("train_loss", "train (evaluation)", "tab:cyan"),
                              ("val_loss", "validation (evaluation)", "tab:orange")):
        ax.plot(steps, [r.get(key) for r in records], marker="o", markersize=4, lw=1,
                color=color, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats)")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.subplots_adjust(left=0.1, right=0.97, top=0.91, bottom=0.12)  # no tight_layout: it draws
    # the figure once more just to measure it
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png")
