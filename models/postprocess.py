"""Turning head outputs into scored segments: the decode settings, decoding and 1-D soft-NMS
of points (ActionFormer), runs of per-frame labels (FAFormer), as pure functions.

All positions are on the head window's frame grid (0 = the window's first frame).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from models.intervals import interval_iou


@dataclass(frozen=True, kw_only=True)
class DecodeConfig:
    """Head outputs → segments.

    Attributes:
        pre_nms_threshold: lowest class probability considered.
        pre_nms_topk: most candidates per window before NMS.
        min_duration_frames: shorter segments are dropped.
        nms_sigma: Gaussian soft-NMS width (score *= exp(-IoU² / sigma)).
        min_score: segments whose (decayed) score falls below this are dropped.
        max_segments: most segments per window after NMS.
        frame_threshold, frame_threshold_off: frame-labelling heads (FAFormer): an action of
            a class is on where its per-frame probability reaches frame_threshold, and stays
            on until it falls below frame_threshold_off (hysteresis).
    """

    pre_nms_threshold: float = 0.05
    pre_nms_topk: int = 500
    min_duration_frames: float = 2.0
    nms_sigma: float = 0.5
    min_score: float = 0.01
    max_segments: int = 50
    frame_threshold: float = 0.5
    frame_threshold_off: float = 0.2

    def __post_init__(self) -> None:
        for name in ("pre_nms_topk", "nms_sigma", "max_segments"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("pre_nms_threshold", "min_score"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0 < self.frame_threshold_off <= self.frame_threshold < 1:
            raise ValueError(
                "need 0 < frame_threshold_off <= frame_threshold < 1, got "
                f"{self.frame_threshold_off} and {self.frame_threshold}"
            )


def frame_segments(
    probs: torch.Tensor,
    valid: torch.Tensor,
    threshold: float,
    min_frames: int = 1,
    off_threshold: float | None = None,
) -> list[tuple[int, int, int, float]]:
    """Per-frame class probabilities (T, K) → segments (start, end, class, score), [start,
    end) in frames, scored by their mean probability. A segment is a run of valid frames whose
    probability stays at or above `off_threshold` (default: `threshold`) and reaches
    `threshold` somewhere (hysteresis: a dip below `threshold` does not split an action)."""
    off = threshold if off_threshold is None else min(off_threshold, threshold)
    on = (probs >= off) & valid[:, None]
    edges = torch.diff(
        on.to(torch.int8),
        dim=0,
        prepend=torch.zeros_like(on[:1], dtype=torch.int8),
        append=torch.zeros_like(on[:1], dtype=torch.int8),
    )
    out = []
    for k in range(probs.shape[1]):
        starts = torch.nonzero(edges[:, k] == 1).flatten().tolist()
        ends = torch.nonzero(edges[:, k] == -1).flatten().tolist()
        for s, e in zip(starts, ends, strict=True):
            run = probs[s:e, k]
            if e - s >= min_frames and float(run.max()) >= threshold:
                out.append((s, e, k, float(run.mean())))
    return out


def frame_runs(
    probs: torch.Tensor, valid: torch.Tensor, decode: DecodeConfig
) -> list[tuple[int, int, int, float]]:
    """`frame_segments` with the decode settings (hysteresis thresholds, shortest run, lowest
    score): per-frame probabilities (T, K) → (start, end, class, score) runs."""
    runs = frame_segments(
        probs,
        valid,
        decode.frame_threshold,
        max(1, round(decode.min_duration_frames)),
        decode.frame_threshold_off,
    )
    return [run for run in runs if run[3] >= decode.min_score]


class Segments(NamedTuple):
    """N segments. bounds: (N, 2) start and end; scores: (N,); labels: (N,) long."""

    bounds: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor


def decode_segments(
    cls_logits: torch.Tensor,
    offsets: torch.Tensor,
    points: torch.Tensor,
    valid: torch.Tensor | None = None,
    *,
    pre_nms_threshold: float = 0.05,
    pre_nms_topk: int = 500,
    min_duration: float = 0.5,
    window_frames: int | None = None,
) -> Segments:
    """Candidate segments of one window.

    Args:
        cls_logits: (N, K) for N points.
        offsets: (N, 2) distances to start and end in units of the point's stride.
        points: (N, 2) position and stride of each point (`make_points`).
        valid: (N,) bool; invalid points are ignored.
        pre_nms_threshold: lowest class probability kept.
        pre_nms_topk: most candidates kept (by probability).
        min_duration: shortest segment kept, in frames.
        window_frames: if given, bounds are clipped to [0, window_frames].
    """
    probs = cls_logits.sigmoid()
    if valid is not None:
        probs = probs * valid[:, None].to(probs.dtype)
    flat = probs.flatten()
    keep = (flat > pre_nms_threshold).nonzero().squeeze(1)
    if keep.numel() > pre_nms_topk:
        keep = keep[flat[keep].topk(pre_nms_topk).indices]
    k = cls_logits.shape[1]
    point_idx, labels = keep // k, keep % k
    pos, stride = points[point_idx, 0], points[point_idx, 1]
    start = pos - offsets[point_idx, 0] * stride
    end = pos + offsets[point_idx, 1] * stride
    if window_frames is not None:
        start, end = start.clamp(0, window_frames), end.clamp(0, window_frames)
    ok = (end - start) >= min_duration
    bounds = torch.stack([start, end], dim=1)[ok]
    return Segments(bounds, flat[keep][ok], labels[ok])


def soft_nms(
    segments: Segments,
    *,
    sigma: float = 0.5,
    min_score: float = 0.001,
    max_segments: int = 100,
    class_aware: bool = True,
) -> Segments:
    """Gaussian soft-NMS in 1-D: after picking the best segment, every other segment (of the
    same class when `class_aware`) has its score multiplied by exp(-IoU² / sigma).

    Returns the kept segments with their decayed scores, best first. Scores only decrease, so
    picks come in descending score order: with `min_score` at a consumer's threshold, the
    segments at or above it are exactly those a lower `min_score` would give. (The loop runs
    in numpy: per-call overhead of small tensor ops dominated it.)
    """
    bounds = segments.bounds.detach().cpu().numpy().astype(np.float64)
    scores = segments.scores.detach().cpu().numpy().astype(np.float64)
    labels = segments.labels.detach().cpu().numpy()
    alive = scores >= min_score
    kept: list[int] = []
    kept_scores: list[float] = []
    while len(kept) < max_segments:
        candidates = np.flatnonzero(alive)
        if candidates.size == 0:
            break
        best = int(candidates[scores[candidates].argmax()])
        kept.append(best)
        kept_scores.append(float(scores[best]))
        alive[best] = False
        others = alive & (labels == labels[best]) if class_aware else alive.copy()
        idx = np.flatnonzero(others)
        if idx.size:
            iou = interval_iou(bounds[best, 0], bounds[best, 1], bounds[idx])
            scores[idx] *= np.exp(-(iou * iou) / sigma)
            alive[idx] = scores[idx] >= min_score
    index = torch.tensor(kept, dtype=torch.long)
    return Segments(
        segments.bounds[index],
        torch.tensor(kept_scores, dtype=segments.scores.dtype),
        segments.labels[index],
    )
