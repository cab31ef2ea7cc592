"""Training curves as a PNG (logged to MLflow and used by `dvc plots`)."""

from __future__ import annotations

from pathlib import Path


def plot_curves(history: list[dict[str, float]], path: Path) -> Path:
    # matplotlib is imported here: it costs ~2 s, and a run only plots once, at its end.
    import matplotlib

    matplotlib.use("Agg")  # no display needed: CI, containers, SSH sessions
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(10, 4))
    figure.subplots_adjust(left=0.07, right=0.98, bottom=0.13, top=0.9, wspace=0.2)  # tight_layout costs ~0.4 s
    for split in ("train", "val"):
        loss_axis.plot(epochs, [row[f"{split}_loss"] for row in history], marker="o", label=split)
        accuracy_axis.plot(epochs, [row[f"{split}_accuracy"] for row in history], marker="o", label=split)
    loss_axis.set(title="Loss", xlabel="epoch")
    accuracy_axis.set(title="Accuracy", xlabel="epoch", ylim=(0.0, 1.0))
    for axis in (loss_axis, accuracy_axis):
        axis.legend()
        axis.grid(alpha=0.3)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
