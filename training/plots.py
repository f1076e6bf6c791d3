"""PNG figures: training curves and per-video timelines (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_curves(history: list[dict], path: str | Path) -> None:
    """history: dicts with "step" and "loss", "lr" and any loss parts ("cls", "reg", "seg",
    "smooth", "token"), or "val_loss", or a validation metric ("map", "top1")."""
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
    train = [h for h in history if "loss" in h]
    steps = [h["step"] for h in train]
    for key in ("loss", "cls", "reg", "seg", "smooth", "token"):
        if train and key in train[0]:
            axes[0].plot(steps, [h[key] for h in train], label=key, lw=1)
    val = [h for h in history if "val_loss" in h]
    if val:
        axes[0].plot([h["step"] for h in val], [h["val_loss"] for h in val], "o-", label="val loss")
    axes[0].set_yscale("log")
    axes[0].set_title("loss")
    axes[0].legend()
    axes[1].plot(steps, [h["lr"] for h in history if "loss" in h])
    axes[1].set_title("learning rate")
    metric = "top1" if any("top1" in h for h in history) else "map"
    points = [h for h in history if metric in h]
    if points:
        axes[2].plot([h["step"] for h in points], [h[metric] for h in points], "o-")
    axes[2].set_ylim(0, 1)
    axes[2].set_title(
        "validation top-1" if metric == "top1" else "validation mAP (avg tIoU 0.3-0.7)"
    )
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_timeline(
    path: str | Path,
    *,
    title: str,
    classes: tuple[str, ...],
    duration_s: float,
    ground_truth: list[tuple[float, float, str]],
    offline: list[tuple[float, float, str, float]],
    streaming: list[tuple[float, float, str, float]],
    onsets: list[tuple[float, str]],
) -> None:
    """One row per class, three lanes: ground truth, offline detections, streaming segments
    (with a tick where each onset event was emitted)."""
    fig, ax = plt.subplots(figsize=(14, 0.5 + 0.75 * len(classes)))
    row = {c: i for i, c in enumerate(classes)}
    for s, e, c in ground_truth:
        ax.broken_barh([(s, e - s)], (row[c] + 0.55, 0.3), color="tab:green")
    for s, e, c, score in offline:
        ax.broken_barh([(s, e - s)], (row[c] + 0.3, 0.2), color="tab:blue", alpha=min(1, score))
    for s, e, c, score in streaming:
        ax.broken_barh([(s, e - s)], (row[c] + 0.05, 0.2), color="tab:orange", alpha=min(1, score))
    for t, c in onsets:
        ax.plot([t, t], [row[c], row[c] + 0.9], color="black", lw=0.8)
    ax.set_yticks([i + 0.5 for i in range(len(classes))], classes)
    ax.set_xlim(0, duration_s)
    ax.set_xlabel("time (s)   green: ground truth, blue: offline, orange: streaming, |: onset")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
