"""Frames as they leave a reader, and the one place where stream time is computed."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded, resized RGB frame of one stream.

    Attributes:
        stream_id: the stream it came from.
        index: position among the frames this reader delivered (0, 1, 2, ...), after sampling.
        pts_s: stream time in seconds (`pts * time_base`, or `index / fps` without timestamps).
        decoded_wall_s: wall-clock time (`time.time()`) when decoding finished.
        image: uint8 array of shape (H, W, 3), RGB; for a signal stream (W + 1, C) float32
            samples (`stream.signals`).
        source_clock_s: the source's own clock at this frame, where it has one apart from
            stream time (an LSL stream's timestamp of the frame's last sample); else None.
    """

    stream_id: str
    index: int
    pts_s: float
    decoded_wall_s: float
    image: np.ndarray
    source_clock_s: float | None = None


def stream_time_s(
    pts: int | None, time_base: Fraction | None, index: int, fps: float | None
) -> float | None:
    """Stream time of a frame: `pts * time_base`, falling back to `index / fps`.

    Returns None when neither is known (no timestamp and no frame rate).
    """
    if pts is not None and time_base is not None and time_base != 0:
        return float(pts * time_base)
    if fps:
        return index / fps
    return None


class FpsSampler:
    """Keeps frames so that the kept stream times step by about `1 / target_fps`.

    Sources faster than the model's rate are thinned; slower ones pass unchanged
    (frames are never duplicated). A timestamp that jumps backwards (a restarted
    camera, a looped file) restarts the sampling grid there.
    """

    def __init__(self, target_fps: float) -> None:
        if target_fps <= 0:
            raise ValueError(f"target_fps must be positive, got {target_fps}")
        self._period_s = 1.0 / target_fps
        self._next_s: float | None = None

    def keep(self, t_s: float) -> bool:
        # A quarter period of slack absorbs timestamp jitter without taking a frame early.
        if self._next_s is None or t_s < self._next_s - 2 * self._period_s:
            self._next_s = t_s
        if t_s < self._next_s - 0.25 * self._period_s:
            return False
        self._next_s += self._period_s
        if self._next_s <= t_s:  # after a gap, restart the grid instead of bursting
            self._next_s = t_s + self._period_s
        return True
