"""What turns a stream's window of features into scored segments: the `Window`, the
`Segmenter` interface, and `ModelSegmenter` (the head network, then ActionFormer's decoding
and soft-NMS, or FAFormer's per-frame labels read as runs)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from engine.backends.base import Backend
from engine.loader import check_positive, check_unit
from engine.tracker import Detection
from models.faformer import FrameLabels
from models.postprocess import Segments, decode_segments, frame_segments, soft_nms


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
        check_positive(self, "pre_nms_topk", "nms_sigma", "max_segments")
        check_unit(self, "pre_nms_threshold", "min_score")
        if not 0 < self.frame_threshold_off <= self.frame_threshold < 1:
            raise ValueError(
                "need 0 < frame_threshold_off <= frame_threshold < 1, got "
                f"{self.frame_threshold_off} and {self.frame_threshold}"
            )


@dataclass(frozen=True, slots=True)
class Window:
    """The head's input for one stream.

    features: (T, C); valid: (T,) bool (False before the stream's first frames);
    start_s: stream time of grid position 0; the window ends at start_s + T * frame_period_s.
    """

    stream_id: str
    features: torch.Tensor
    valid: torch.Tensor
    start_s: float
    frame_period_s: float

    @property
    def end_s(self) -> float:
        return self.start_s + self.features.shape[0] * self.frame_period_s


Segmenter = Callable[[Window], list[Detection]]


class ModelSegmenter:
    """The head network plus decoding and soft-NMS: a `Window` → scored `Detection`s."""

    def __init__(
        self,
        backend: Backend,
        classes: tuple[str, ...],
        config: DecodeConfig,
        *,
        stop_below: float = 0.0,
    ) -> None:
        """`stop_below`: soft-NMS stops once no segment scores this much (the tracker's
        onset threshold: it ignores weaker segments, and the stronger ones are unchanged)."""
        self.backend, self.classes, self.config = backend, classes, config
        self.stop_below = stop_below

    def __call__(self, window: Window) -> list[Detection]:
        return self.many([window])[0]

    def many(self, windows: list[Window]) -> list[list[Detection]]:
        """Several streams' windows through the head network as one batch."""
        out = self.backend.head(
            torch.stack([w.features for w in windows]), torch.stack([w.valid for w in windows])
        )
        return [self._segments(w, out, i) for i, w in enumerate(windows)]

    def _segments(self, window: Window, out, i: int) -> list[Detection]:
        T = window.features.shape[0]
        c = self.config
        p = window.frame_period_s
        if isinstance(out, FrameLabels):
            runs = frame_segments(
                out.frame_logits[i].sigmoid(),
                out.valid[i],
                c.frame_threshold,
                max(1, round(c.min_duration_frames)),
                c.frame_threshold_off,
            )
            return [
                Detection(window.start_s + s * p, window.start_s + e * p, self.classes[k], score)
                for s, e, k, score in runs
                if score >= c.min_score
            ]
        candidates = decode_segments(
            out.cls_logits[i],
            out.offsets[i],
            self.backend.points,
            out.valid[i],
            pre_nms_threshold=c.pre_nms_threshold,
            pre_nms_topk=c.pre_nms_topk,
            min_duration=c.min_duration_frames,
            window_frames=T,
        )
        kept: Segments = soft_nms(
            candidates,
            sigma=c.nms_sigma,
            min_score=max(c.min_score, self.stop_below),
            max_segments=c.max_segments,
        )
        return [
            Detection(
                window.start_s + float(b[0]) * p,
                window.start_s + float(b[1]) * p,
                self.classes[int(label)],
                float(score),
            )
            for b, score, label in zip(kept.bounds, kept.scores, kept.labels, strict=True)
        ]
