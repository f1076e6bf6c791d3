"""What turns a stream's window of features into scored segments: the `Window`, the
`Segmenter` interface, and `ModelSegmenter` (the head network, then its family's decoding)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from engine.backends.base import Backend
from models.heads import head_family
from models.intervals import Interval
from models.postprocess import DecodeConfig


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


Segmenter = Callable[[Window], list[Interval]]


class ModelSegmenter:
    """The head network, then its family's decoding (`models.heads`): a `Window` → scored
    `Interval`s."""

    def __init__(
        self,
        backend: Backend,
        classes: tuple[str, ...],
        config: DecodeConfig,
        *,
        stop_below: float = 0.0,
    ) -> None:
        """`stop_below`: decoding may stop once no segment scores this much (the tracker's
        onset threshold: it ignores weaker segments, and the stronger ones are unchanged)."""
        self.backend, self.classes, self.config = backend, classes, config
        self.head = backend.model_config.head
        self.family = head_family(self.head)
        self.stop_below = stop_below

    def __call__(self, window: Window) -> list[Interval]:
        return self.many([window])[0]

    def many(self, windows: list[Window]) -> list[list[Interval]]:
        """Several streams' windows through the head network as one batch."""
        out = self.backend.head(
            torch.stack([w.features for w in windows]), torch.stack([w.valid for w in windows])
        )
        return [self._detections(w, out, i) for i, w in enumerate(windows)]

    def _detections(self, window: Window, out, i: int) -> list[Interval]:
        p = window.frame_period_s
        segments = self.family.window_segments(self.head, out, i, self.config, self.stop_below)
        return [
            Interval(window.start_s + s * p, window.start_s + e * p, self.classes[k], score)
            for s, e, k, score in segments
        ]
