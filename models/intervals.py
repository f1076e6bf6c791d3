"""Labelled intervals, temporal IoU and one-to-one matching: the one definition that NMS, the
event tracker, the metrics and the live truth monitor share. numpy only (no torch), so the
tracker stays light."""

from __future__ import annotations

from collections import defaultdict
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


def hungarian(cost: np.ndarray) -> list[tuple[int, int]]:
    """Minimum-cost assignment of the rows of `cost` (n, m), n <= m, to distinct columns
    (Kuhn–Munkres with potentials, O(n² m)); returns (row, column) pairs."""
    n, m = cost.shape
    if n > m:
        return [(r, c) for c, r in hungarian(cost.T)]
    u, v = np.zeros(n + 1), np.zeros(m + 1)
    match = np.zeros(m + 1, int)  # match[j]: row (1-based) assigned to column j; 0 = none
    for i in range(1, n + 1):
        match[0], j0 = i, 0
        minv, used, way = np.full(m + 1, np.inf), np.zeros(m + 1, bool), np.zeros(m + 1, int)
        while match[j0]:
            used[j0] = True
            i0 = match[j0]
            cur = cost[i0 - 1] - u[i0] - v[1:]
            free = ~used[1:]
            better = free & (cur < minv[1:])
            minv[1:][better], way[1:][better] = cur[better], j0
            j1 = 1 + int(np.argmin(np.where(free, minv[1:], np.inf)))
            delta = minv[j1]
            u[match[used]] += delta
            v[used] -= delta
            minv[~used] -= delta
            j0 = j1
        while j0:
            j1 = way[j0]
            match[j0] = match[j1]
            j0 = j1
    return [(int(match[j]) - 1, j - 1) for j in range(1, m + 1) if match[j]]


def match_events(
    reported: list[Interval], truth: list[Interval], threshold: float
) -> list[tuple[int, int]]:
    """One-to-one (reported index, truth index) pairs: same video and label, tIoU ≥
    threshold, most pairs then largest total tIoU."""
    groups: dict[tuple[str, str], tuple[list[int], list[int]]] = defaultdict(lambda: ([], []))
    for i, r in enumerate(reported):
        groups[(r.video_id, r.label)][0].append(i)
    for j, t in enumerate(truth):
        groups[(t.video_id, t.label)][1].append(j)
    pairs = []
    for rows, cols in groups.values():
        if not rows or not cols:
            continue
        bounds = np.array([[truth[j].start_s, truth[j].end_s] for j in cols])
        iou = np.stack([interval_iou(reported[i].start_s, reported[i].end_s, bounds) for i in rows])
        feasible = iou >= threshold
        if not feasible.any():
            continue
        cost = np.where(feasible, -(1.0 + iou), 0.0)
        pairs += [(rows[r], cols[c]) for r, c in hungarian(cost) if feasible[r, c]]
    return sorted(pairs)
