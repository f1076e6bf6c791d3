"""Labelled intervals and temporal IoU, the one definition that NMS, the event tracker and the
metrics share. numpy only (no torch), so the tracker stays light."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def interval_iou(start: float, end: float, bounds: np.ndarray) -> np.ndarray:
    """tIoU of [start, end] with each row [start, end] of `bounds` (N, 2) → (N,) float64;
    0 where the union is empty."""
    b = np.asarray(bounds, dtype=np.float64).reshape(-1, 2)
    inter = np.clip(np.minimum(end, b[:, 1]) - np.maximum(start, b[:, 0]), 0.0, None)
    union = (end - start) + (b[:, 1] - b[:, 0]) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


@dataclass(frozen=True, slots=True)
class Interval:
    """A labelled interval in seconds: a ground-truth action (score 1) or a scored detection,
    of the video `video_id` where several videos are pooled (metrics). The tracker, the
    segmenter, the metrics and evaluation all speak in it."""

    start_s: float
    end_s: float
    label: str
    score: float = 1.0
    video_id: str = ""
