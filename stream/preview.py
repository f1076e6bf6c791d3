"""Small frames for the live view, made only while someone watches.

A watcher (a browser showing a stream) says which width and rate it wants; readers ask `due`
for every frame they deliver and, when it answers a width, `offer` that stream a frame scaled
to it. Nobody watching costs one dictionary look-up per frame. Watchers that stop renewing
their interest expire after `WATCH_S`.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

WATCH_S = 5.0  # a watcher's interest lasts this long unless renewed
JPEG_QUALITY = 6  # FFmpeg's mjpeg scale: 2 best ... 31 worst
MAX_WIDTH = 1920
MAX_FPS = 30.0


@dataclass(frozen=True, slots=True)
class Preview:
    """One stream's newest preview: `seq` counts offers (1 for the first); `jpeg` the frame
    as JPEG; `t_s` its stream time; `wall_s` when it was offered."""

    seq: int
    jpeg: bytes
    t_s: float
    wall_s: float


class Previews:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        # stream -> watcher -> (width, period_s, expires at monotonic s)
        self._watchers: dict[str, dict[object, tuple[int, float, float]]] = {}
        self._latest: dict[str, Preview] = {}
        self._last_offer: dict[str, float] = {}
        self.encode_cpu_s = 0.0  # CPU time spent encoding previews, all readers together

    def watch(self, stream_id: str, watcher: object, *, width: int, fps: float) -> None:
        """`watcher` (any hashable id) wants `stream_id` at `width` px and `fps` frames/s for
        the next `WATCH_S` seconds."""
        width = max(16, min(int(width), MAX_WIDTH))
        period = 1.0 / max(0.1, min(float(fps), MAX_FPS))
        with self._lock:
            self._watchers.setdefault(stream_id, {})[watcher] = (
                width,
                period,
                time.monotonic() + WATCH_S,
            )

    def unwatch(self, stream_id: str, watcher: object) -> None:
        with self._lock:
            self._watchers.get(stream_id, {}).pop(watcher, None)

    def due(self, stream_id: str) -> int | None:
        """The width to make a preview of this stream's current frame at, or None (nobody
        watches, or the fastest watcher's period has not passed since the last one)."""
        watchers = self._watchers.get(stream_id)
        if not watchers:
            return None
        now = time.monotonic()
        with self._lock:
            live = {k: v for k, v in watchers.items() if v[2] > now}
            if len(live) != len(watchers):
                self._watchers[stream_id] = live
            if not live:
                return None
            period = min(v[1] for v in live.values())
            if now - self._last_offer.get(stream_id, -1e9) < period * 0.9:
                return None
            return max(v[0] for v in live.values())

    def offer(self, stream_id: str, image: np.ndarray, t_s: float) -> None:
        """A frame for the watchers (RGB uint8), encoded here, once, on the caller's thread
        (a reader's: the web server only sends bytes)."""
        t0 = time.thread_time()
        data = rgb_to_jpeg(image)
        self.store(stream_id, data, t_s, time.thread_time() - t0)

    def store(self, stream_id: str, jpeg: bytes, t_s: float, cpu_s: float = 0.0) -> None:
        """A frame already encoded (by a reader process), with the CPU its encoding took."""
        spent = cpu_s
        with self._lock:
            self.encode_cpu_s += spent
            self._last_offer[stream_id] = time.monotonic()
            old = self._latest.get(stream_id)
            self._latest[stream_id] = Preview((old.seq if old else 0) + 1, jpeg, t_s, time.time())

    def latest(self, stream_id: str) -> Preview | None:
        return self._latest.get(stream_id)


def scaled_size(width: int, height: int, target_width: int) -> tuple[int, int]:
    """(w, h) of a frame of `width`×`height` scaled to `target_width` (never enlarged), both
    even (what JPEG encoders of 4:2:0 want)."""
    w = min(target_width, width)
    h = max(2, round(height * w / max(width, 1)))
    return max(2, w - w % 2), h - h % 2


def encode_jpeg(frame: av.VideoFrame, quality: int = JPEG_QUALITY) -> bytes:
    """One frame as a JPEG file (FFmpeg's mjpeg encoder; `quality`: 2 best ... 31 worst)."""
    ctx = av.CodecContext.create("mjpeg", "w")
    ctx.width, ctx.height = frame.width, frame.height
    ctx.pix_fmt = "yuvj420p"
    ctx.time_base = Fraction(1, 25)
    ctx.qmin = ctx.qmax = quality
    image = frame.reformat(format="yuvj420p")
    image.pts = 0
    data = b"".join(bytes(p) for p in ctx.encode(image))
    return data + b"".join(bytes(p) for p in ctx.encode(None))


def rgb_to_jpeg(image: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """An RGB uint8 (H, W, 3) array as JPEG, cut to even sides (4:2:0)."""
    h, w = image.shape[:2]
    even = np.ascontiguousarray(image[: h - h % 2, : w - w % 2])
    return encode_jpeg(av.VideoFrame.from_ndarray(even, format="rgb24"), quality)
