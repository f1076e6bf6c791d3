"""One stream's timeline as the inference thread keeps it: the window of the last T encoder
outputs, the frames whose outputs still wait for the encoder's lookahead, the newest frame
the window reaches, and the countdown to the next head run. Pure: no threads, sockets or
clocks, so it is tested with plain tensors."""

from __future__ import annotations

from collections import deque

import torch

from engine.segmenter import Window
from stream.frames import Frame


class StreamTimeline:
    """Args:
    stream_id: the stream, named in every `Window`.
    window_frames: T, the head's window.
    feature_dim: C, the encoder's output size.
    delay_frames: the encoder's lookahead: its output for a frame comes this many frames
        later, so that many frames wait in `pending`.
    head_stride: S, a head run is due every S frames the window reaches.
    frame_period_s: the model's frame period (1 / fps).
    """

    def __init__(
        self,
        *,
        stream_id: str,
        window_frames: int,
        feature_dim: int,
        delay_frames: int,
        head_stride: int,
        frame_period_s: float,
    ) -> None:
        self.stream_id = stream_id
        self.window_frames, self.feature_dim = window_frames, feature_dim
        self.delay_frames, self.head_stride = delay_frames, head_stride
        self.frame_period_s = frame_period_s
        # A ring of 2T rows holding each output twice (rows i and i + T): the last T outputs
        # are always one contiguous slice, so a frame costs two row writes, not a T x C copy.
        self._ring = torch.zeros(2 * window_frames, feature_dim)
        self._slot = 0  # the row the next output goes to (mod T)
        self.filled = 0
        self.pending: deque[Frame] = deque()
        self.newest: Frame | None = None
        self.since_head = 0

    def start(self) -> None:
        """A new connection: an empty window and no frames."""
        self._ring.zero_()
        self._slot = 0
        self.filled = 0
        self.pending.clear()
        self.newest = None
        self.since_head = 0

    def end(self) -> None:
        """The connection ended: no newest frame, nothing due (frames still waiting for the
        lookahead never get their output)."""
        self.newest = None
        self.since_head = 0

    def push(self, frame: Frame, y: torch.Tensor) -> bool:
        """Adds a frame and the encoder's output `y` (C,) that came with it (for the frame
        `delay_frames` earlier). Returns whether a head run is due."""
        self.pending.append(frame)
        if len(self.pending) <= self.delay_frames:
            return False  # the encoder has not seen enough future frames for the oldest one
        self.newest = self.pending.popleft()
        i = self._slot
        self._ring[i] = self._ring[i + self.window_frames] = y.reshape(-1)
        self._slot = (i + 1) % self.window_frames
        self.filled = min(self.filled + 1, self.window_frames)
        self.since_head += 1
        return self.since_head >= self.head_stride

    @property
    def window(self) -> torch.Tensor:
        """(T, C) the last T outputs, oldest first: a view of the ring, valid until the next
        `push` (`head_input` hands out a copy)."""
        return self._ring[self._slot : self._slot + self.window_frames]

    @property
    def end_s(self) -> float:
        """Stream time at which the window ends (just after the newest frame)."""
        assert self.newest is not None
        return self.newest.pts_s + self.frame_period_s

    def head_input(self) -> tuple[Window, Frame] | None:
        """Restarts the countdown and returns the head's input: the window snapshot and the
        frame the decision is taken on (the newest received: with lookahead, frames the window
        does not reach yet were already seen by the encoder). None before the first output."""
        self.since_head = 0
        if self.newest is None:
            return None
        T = self.window_frames
        valid = torch.arange(T) >= T - self.filled
        start_s = self.end_s - T * self.frame_period_s
        # a copy: a queued head run keeps its snapshot while later frames are pushed
        window = Window(self.stream_id, self.window.clone(), valid, start_s, self.frame_period_s)
        return window, self.pending[-1] if self.pending else self.newest
