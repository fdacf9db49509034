"""PNG plots of training and evaluation (matplotlib, headless)."""

from __future__ import annotations

import csv
import pathlib
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # no display on workers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def training_curves(history_csv: pathlib.Path, path: pathlib.Path) -> None:
    with open(history_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    epochs = [int(r["epoch"]) + 1 for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, metric in zip(axes, ("accuracy", "loss"), strict=True):
        axis.plot(epochs, [float(r[metric]) for r in rows], label=f"training (augmented) {metric}")
        if rows[0].get(f"val_{metric}", "NA") != "NA":  # Keras writes NA when there was no validation data
            axis.plot(epochs, [float(r[f"val_{metric}"]) for r in rows], label=f"validation {metric}")
        axis.set_xlabel("epoch")
        axis.set_title(metric)
        axis.legend()
        axis.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def confusion_matrix(metrics: dict, path: pathlib.Path) -> None:
    confusion = np.asarray(metrics["confusion"])
    labels = metrics["labels"]
    fig, axis = plt.subplots(figsize=(1.0 + 0.6 * len(labels), 0.8 + 0.6 * len(labels)))
    axis.imshow(confusion, cmap="Blues")
    for (row, col), value in np.ndenumerate(confusion):
        axis.text(col, row, str(value), ha="center", va="center",
                  color="white" if value > confusion.max() / 2 else "black")
    axis.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    axis.set_yticks(range(len(labels)), labels)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title(f"Track-level confusion ({metrics.get('split', '')}), accuracy {metrics['track_accuracy']:.2f}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def embedding_map(embeddings: np.ndarray, labels: Sequence[str], path: pathlib.Path, *, title: str) -> None:
    """First two principal components of the embeddings, one colour per label."""
    centred = embeddings - embeddings.mean(axis=0)
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    points = centred @ components[:2].T if len(components) >= 2 else np.c_[centred[:, :1], np.zeros(len(centred))]
    fig, axis = plt.subplots(figsize=(7, 6))
    for index, label in enumerate(sorted(set(labels))):
        chosen = np.array([name == label for name in labels])
        axis.scatter(points[chosen, 0], points[chosen, 1], label=label, s=40, color=plt.cm.tab10(index % 10))
    axis.set_title(title)
    axis.set_xlabel("PC 1")
    axis.set_ylabel("PC 2")
    axis.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def reliability_diagram(calibration: dict, path: pathlib.Path, *, title: str) -> None:
    """Accuracy against mean confidence per confidence bin (transforms.calibration.reliability), the
    diagonal being a confidence that means what it says; bar widths follow the bins, labels count tracks."""
    curve = calibration["reliability"]
    fig, axis = plt.subplots(figsize=(5, 5))
    axis.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="calibrated")
    axis.bar([b["low"] for b in curve], [b["accuracy"] for b in curve], width=[b["high"] - b["low"] for b in curve],
             align="edge", alpha=0.5, edgecolor="black", label="accuracy in bin")
    axis.plot([b["confidence"] for b in curve], [b["accuracy"] for b in curve], "o-", label="mean confidence")
    for b in curve:
        axis.text(b["low"] + 0.01, min(b["accuracy"] + 0.02, 0.97), str(b["tracks"]), fontsize=8)
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1)
    axis.set_xlabel("confidence")
    axis.set_ylabel("share right")
    axis.set_title(f"{title}\nECE {calibration['ece']:.3f}")
    axis.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
