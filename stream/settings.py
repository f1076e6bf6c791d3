"""How readers open and pace sources."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from stream.reconnect import Backoff


@dataclass(frozen=True, kw_only=True)
class StreamConfig:
    """How sources are read.

    Attributes:
        buffer_frames: frames buffered per stream between its reader and the model.
        timeout_s: a live source silent for this long is a disconnect (and the open timeout).
        rtsp_transport: "tcp" (no loss, no reordering) or "udp".
        realtime: play files at their own frame rate, as a camera would (False: as fast as
            the model takes them; `actstream run --fast`).
        reconnect_initial_s, reconnect_max_s, reconnect_jitter: capped exponential back-off.
        retry_first_open: keep retrying a live source unreachable at start-up instead of
            refusing to start.
        reader_nice: added to the reader threads' nice value (Linux; 0-19): decoding yields the
            cores to the model when both want them, and fills them when the model waits.
    """

    buffer_frames: int = 32
    timeout_s: float = 5.0
    rtsp_transport: Literal["tcp", "udp"] = "tcp"
    realtime: bool = True
    reconnect_initial_s: float = 0.5
    reconnect_max_s: float = 10.0
    reconnect_jitter: float = 0.2
    retry_first_open: bool = False
    reader_nice: int = 5

    def __post_init__(self) -> None:
        for name in ("buffer_frames", "timeout_s", "reconnect_initial_s", "reconnect_max_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0 <= self.reader_nice <= 19:
            raise ValueError(f"reader_nice must be in [0, 19], got {self.reader_nice}")
        if not 0 <= self.reconnect_jitter < 1:
            raise ValueError(f"reconnect_jitter must be in [0, 1), got {self.reconnect_jitter}")
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise ValueError("reconnect_max_s must be >= reconnect_initial_s")


@dataclass(frozen=True, kw_only=True)
class ReaderOptions:
    """How readers open and pace sources (built from the `stream` config section).

    Attributes:
        width, height: frame size delivered to the model (resized inside PyAV).
        fps: the model's frame rate; faster sources are sampled down to it.
        timeout_s: socket timeout for live network sources; a stall longer than this is a
            disconnect.
        rtsp_transport: "tcp" (default; no loss or reordering) or "udp".
        realtime: play files (and synthetic scenes) at their own frame rate, as a live
            stream would; False decodes them as fast as the consumer takes frames.
        backoff: reconnect delays for live sources.
        retry_first_open: keep retrying a live source that cannot be opened at start-up
            (False: report FAILED so that the detector refuses to start).
        nice: added to the reader thread's nice value (Linux threads have their own; 0: none).
    """

    width: int = 64
    height: int = 64
    fps: float = 10.0
    timeout_s: float = 5.0
    rtsp_transport: str = "tcp"
    realtime: bool = True
    backoff: Backoff = Backoff()
    retry_first_open: bool = False
    nice: int = 0
