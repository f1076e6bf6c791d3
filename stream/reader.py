"""One reader thread per stream: open, decode, resize to RGB, sample, stamp, buffer, reconnect.

State machine (every change is reported as a `StatusEvent`, in order with the frames):

    CONNECTING ──▶ CONNECTED ──▶ ENDED           (a file, or a finite synthetic scene)
        │              │
        │              └──▶ DISCONNECTED ──▶ RECONNECTING ──▶ CONNECTING ...   (live sources)
        └──▶ FAILED   (cannot open; at start-up, or a file that breaks)
    any state ──▶ STOPPED   (the detector asked the reader to stop)
"""

from __future__ import annotations

import enum
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from stream.buffer import BufferClosed, FrameBuffer
from stream.frames import FpsSampler, Frame, stream_time_s
from stream.reconnect import Backoff
from stream.sources import SourceError, SourceKind, SourceSpec, av_open_args
from stream.synthetic import CLASSES, SyntheticScene

logger = logging.getLogger(__name__)

# Consecutive undecodable packets after which a live stream is treated as broken.
MAX_CONSECUTIVE_DECODE_ERRORS = 50


class ReaderState(enum.Enum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    RECONNECTING = "reconnecting"
    ENDED = "ended"
    FAILED = "failed"
    STOPPED = "stopped"


_FINAL = {ReaderState.ENDED, ReaderState.FAILED, ReaderState.STOPPED}
ALLOWED_TRANSITIONS: dict[ReaderState, frozenset[ReaderState]] = {
    ReaderState.CONNECTING: frozenset(
        {ReaderState.CONNECTED, ReaderState.DISCONNECTED, ReaderState.FAILED, ReaderState.STOPPED}
    ),
    ReaderState.CONNECTED: frozenset(
        {ReaderState.DISCONNECTED, ReaderState.ENDED, ReaderState.FAILED, ReaderState.STOPPED}
    ),
    ReaderState.DISCONNECTED: frozenset({ReaderState.RECONNECTING, ReaderState.STOPPED}),
    ReaderState.RECONNECTING: frozenset({ReaderState.CONNECTING, ReaderState.STOPPED}),
    ReaderState.ENDED: frozenset(),
    ReaderState.FAILED: frozenset(),
    ReaderState.STOPPED: frozenset(),
}


@dataclass(frozen=True, slots=True)
class StatusEvent:
    """A reader's state change; travels through the frame buffer, in order with frames."""

    stream_id: str
    state: ReaderState
    wall_s: float
    detail: str = ""


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


class StreamReader:
    """Reads one source on its own thread into a `FrameBuffer` of `Frame | StatusEvent`.

    Args:
        spec: the parsed source.
        buffer: where frames and status events go.
        options: decode and reconnect settings.
        on_decoded: optional callback with the number of frames just decoded (metrics).
        on_drop: optional callback with the number of frames the buffer dropped.
        on_late: optional callback with the number of frames a live `synthetic://` source
            skipped because its reader fell behind by more than a frame (as a camera's
            frames are gone when nobody reads them: no backlog of frames to render).
        rng: randomness for reconnect jitter.
    """

    def __init__(
        self,
        spec: SourceSpec,
        buffer: FrameBuffer,
        options: ReaderOptions,
        *,
        on_decoded: Callable[[int], None] | None = None,
        on_drop: Callable[[int], None] | None = None,
        on_late: Callable[[int], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.spec = spec
        self.buffer = buffer
        self.options = options
        self._on_decoded = on_decoded
        self._on_drop = on_drop
        self._on_late = on_late
        self.frames_late = 0
        self._rng = rng or random.Random()
        self._stop = threading.Event()
        self.first_open_done = threading.Event()
        self.first_error: str | None = None
        self.state = ReaderState.CONNECTING
        self.frames_decoded = 0
        self.frames_delivered = 0
        self.reconnects = 0
        self._delivered_since_open = False
        self._thread = threading.Thread(
            target=self._run, name=f"reader-{spec.stream_id}", daemon=True
        )

    # ---- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout_s: float | None = None) -> None:
        if self._thread.ident is not None:  # a reader never started has nothing to join
            self._thread.join(timeout_s)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    # ---- state ------------------------------------------------------------------------------
    def _set_state(self, new: ReaderState, detail: str = "", *, force: bool = False) -> None:
        if not force and new not in ALLOWED_TRANSITIONS[self.state]:
            raise AssertionError(f"reader {self.spec.stream_id}: {self.state} -> {new}")
        self.state = new
        # A source that cannot be opened at start-up is reported once, by the start-up error.
        bad = new is ReaderState.DISCONNECTED or (
            new is ReaderState.FAILED and not self.first_error
        )
        suffix = f" ({detail})" if detail else ""
        logger.log(
            logging.WARNING if bad else logging.INFO,
            "stream %s: %s%s",
            self.spec.stream_id,
            new.value,
            suffix,
        )
        event = StatusEvent(self.spec.stream_id, new, time.time(), detail)
        try:
            self.buffer.put(event)
        except BufferClosed:
            pass

    def _run(self) -> None:
        if self.options.nice:
            try:  # Linux: each thread has its own nice value (its native id is a task id)
                tid = threading.get_native_id()
                current = os.getpriority(os.PRIO_PROCESS, tid)
                os.setpriority(os.PRIO_PROCESS, tid, min(19, current + self.options.nice))
            except (AttributeError, OSError) as exc:
                logger.debug("stream %s: reader nice not set (%s)", self.spec.stream_id, exc)
        try:
            self._loop()
        except BufferClosed:
            pass
        except Exception as exc:  # a bug: report it as a failed stream, never die silently
            logger.exception("stream %s: reader crashed", self.spec.stream_id)
            self.first_error = self.first_error or f"{self.spec.display}: reader error: {exc}"
            if self.state not in _FINAL:
                self._set_state(ReaderState.FAILED, str(exc), force=True)
        finally:
            if self.state not in _FINAL:
                self._set_state(ReaderState.STOPPED)
            self.first_open_done.set()

    def _loop(self) -> None:
        attempt = 0
        opened_once = False
        while not self._stop.is_set():
            if self.state is ReaderState.RECONNECTING:
                self._set_state(ReaderState.CONNECTING)
            try:
                frames = self._open()
            except (av.FFmpegError, OSError, SourceError, ValueError) as exc:
                message = _describe_open_error(self.spec, exc)
                if not opened_once and not (self.spec.live and self.options.retry_first_open):
                    self.first_error = message
                    self._set_state(ReaderState.FAILED, message)
                    return
                self._set_state(ReaderState.DISCONNECTED, message)
            else:
                opened_once = True
                self._set_state(ReaderState.CONNECTED)
                if self.spec.live:
                    self.first_open_done.set()  # a file is open once a frame decodes (_pump)
                try:
                    ended = self._pump(frames)
                    reason = "stream ended"
                except (av.FFmpegError, OSError, ValueError) as exc:
                    ended, reason = False, _describe_read_error(exc)
                    if not self.spec.live:
                        message = f"{self.spec.display}: {reason}"
                        if not self.frames_delivered:  # not one frame: a start-up mistake
                            self.first_error = message
                        self._set_state(ReaderState.FAILED, message)
                        return
                finally:
                    frames.close()
                if self._stop.is_set():
                    break
                if ended or not self.spec.live:
                    self._set_state(ReaderState.ENDED)
                    return
                self._set_state(ReaderState.DISCONNECTED, reason)
                attempt = 0 if self._delivered_since_open else attempt
            if self._stop.is_set():
                break
            delay = self.options.backoff.delay_s(attempt, self._rng)
            attempt += 1
            self.reconnects += 1
            self._set_state(ReaderState.RECONNECTING, f"retry in {delay:.1f} s")
            self.first_open_done.set()
            if self._stop.wait(delay):
                break
        self._set_state(ReaderState.STOPPED)

    # ---- opening ----------------------------------------------------------------------------
    def _open(self) -> _FrameSource:
        self._delivered_since_open = False
        if self.spec.kind is SourceKind.SYNTHETIC:
            return _SyntheticFrames(self.spec, self.options)
        return _PyAVFrames(self.spec, self.options)

    # ---- the decode loop ------------------------------------------------------------------
    def _pump(self, source: _FrameSource) -> bool:
        """Moves frames from `source` into the buffer; True when the source really ended."""
        sampler = FpsSampler(self.options.fps)
        pace = self.options.realtime and not (
            self.spec.live and self.spec.kind is not SourceKind.SYNTHETIC
        )
        wall0 = t0 = None
        period_s = 1.0 / self.options.fps
        # A generated live stream behaves as a camera: frames nobody was ready for are gone.
        # (Files keep every frame: their buffer blocks instead.)
        skip_late = self.spec.live and self.spec.kind is SourceKind.SYNTHETIC
        for t_s, raw in source:
            if self._stop.is_set():
                return False
            self.frames_decoded += 1
            if self._on_decoded is not None:
                self._on_decoded(1)
            if not sampler.keep(t_s):
                continue
            if pace:
                if wall0 is None or t_s < t0:
                    wall0, t0 = time.monotonic(), t_s
                delay = wall0 + (t_s - t0) - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    return False
                if skip_late and delay < -period_s:  # its time has passed: skip it unrendered
                    self.frames_late += 1
                    if self._on_late is not None:
                        self._on_late(1)
                    continue
            image = source.image(raw)  # resize + RGB only for the frames that are kept
            frame = Frame(self.spec.stream_id, self.frames_delivered, t_s, time.time(), image)
            dropped = self.buffer.put(frame)
            self.frames_delivered += 1
            if not self.first_open_done.is_set():
                self.first_open_done.set()
            self._delivered_since_open = True
            if dropped and self._on_drop is not None:
                self._on_drop(dropped)
        return source.finite


class _FrameSource:
    """An opened source: iterate for (pts_s, raw frame); `image(raw)` gives the model's RGB
    uint8 (H, W, 3) array; `finite` says whether the source can end."""

    finite = True

    def __iter__(self) -> Iterator[tuple[float, Any]]:  # pragma: no cover - interface
        raise AssertionError("abstract")

    def image(self, raw: Any) -> np.ndarray:  # pragma: no cover - interface
        raise AssertionError("abstract")

    def close(self) -> None:
        """Releases the source (containers, sockets); safe to call twice."""


class _PyAVFrames(_FrameSource):
    def __init__(self, spec: SourceSpec, options: ReaderOptions) -> None:
        fmt, av_options = av_open_args(
            spec, timeout_s=options.timeout_s, rtsp_transport=options.rtsp_transport
        )
        self.spec, self.options = spec, options
        self.finite = not spec.live
        # One scaler per source: `VideoFrame.reformat` builds a new one per frame, which
        # costs about a third of a small frame's decode time.
        self.scaler = VideoReformatter()
        # PyAV's own timeout guards open and every read, in addition to FFmpeg's socket one.
        timeout = (options.timeout_s * 2, options.timeout_s * 2) if spec.live else None
        self.container = av.open(spec.url, format=fmt, options=av_options, timeout=timeout)
        try:
            if not self.container.streams.video:
                raise SourceError(f"{spec.display}: has no video stream; give a video source")
            self.video = self.container.streams.video[0]
            if spec.live:
                # As an av.open option low_delay never reaches the decoder PyAV opens.
                self.video.codec_context.flags |= av.codec.context.Flags.low_delay
                self.video.thread_type = "SLICE"
            else:
                # Frames up to 720p decode cheapest on one thread each (several streams give
                # the parallelism; decoder threads cost ~15% more CPU per 240p frame); larger
                # ones need the decoder's threads to keep up.
                ctx = self.video.codec_context  # None for a codec FFmpeg lacks
                if ctx is None or (ctx.width or 0) * (ctx.height or 0) >= 1280 * 720:
                    self.video.thread_type = "AUTO"
                else:
                    ctx.thread_count = 1
            rate = self.video.average_rate or self.video.guessed_rate
            self.fps = float(rate) if rate else None
        except BaseException:
            self.container.close()
            raise

    def __iter__(self) -> Iterator[tuple[float, av.VideoFrame]]:
        raw_index = 0
        consecutive_errors = 0
        wall0 = time.monotonic()
        for packet in self.container.demux(self.video):
            try:
                decoded = packet.decode()
                consecutive_errors = 0
            except av.InvalidDataError:
                consecutive_errors += 1
                if consecutive_errors >= MAX_CONSECUTIVE_DECODE_ERRORS:
                    raise
                continue
            for frame in decoded:
                t_s = stream_time_s(frame.pts, frame.time_base, raw_index, self.fps)
                if t_s is None:
                    t_s = time.monotonic() - wall0
                raw_index += 1
                yield t_s, frame

    def image(self, raw: av.VideoFrame) -> np.ndarray:
        # Resize and convert inside PyAV (libswscale), in one pass.
        return self.scaler.reformat(
            raw, width=self.options.width, height=self.options.height, format="rgb24"
        ).to_ndarray()

    def close(self) -> None:
        self.container.close()


def synthetic_scene(spec: SourceSpec, options: ReaderOptions) -> SyntheticScene:
    """The scene a `synthetic://` source plays (its `segments()` are the ground truth)."""
    p = spec.params
    try:
        return SyntheticScene(
            seed=int(p.get("seed", 0)),
            width=int(p.get("width", options.width)),
            height=int(p.get("height", options.height)),
            num_actors=int(p.get("actors", 2)),
            num_distractors=int(p.get("distractors", 1)),
            duration_s=float(p["duration_s"]) if "duration_s" in p else None,
            classes=CLASSES,
        )
    except ValueError as exc:
        raise SourceError(f"{spec.display}: bad option ({exc})") from exc


class _SyntheticFrames(_FrameSource):
    def __init__(self, spec: SourceSpec, options: ReaderOptions) -> None:
        self.scene = synthetic_scene(spec, options)
        duration = self.scene.duration_s
        try:
            self.fps = float(spec.params.get("fps", options.fps))
        except ValueError as exc:
            raise SourceError(f"{spec.display}: bad option ({exc})") from exc
        if self.fps <= 0:
            raise SourceError(f"{spec.display}: fps must be positive")
        self.duration_s = duration
        self.finite = duration is not None
        self.resize = (self.scene.width, self.scene.height) != (options.width, options.height)
        self.options = options

    def __iter__(self) -> Iterator[tuple[float, float]]:
        i = 0
        while self.duration_s is None or i / self.fps < self.duration_s:
            yield i / self.fps, i / self.fps
            i += 1

    def image(self, raw: float) -> np.ndarray:
        img = self.scene.render(raw)
        if self.resize:
            img = _resize_nearest(img, self.options.width, self.options.height)
        return img


def _resize_nearest(img: np.ndarray, width: int, height: int) -> np.ndarray:
    h, w, _ = img.shape
    ys = (np.arange(height) * h // height).clip(0, h - 1)
    xs = (np.arange(width) * w // width).clip(0, w - 1)
    return img[ys][:, xs]


def decode_file(spec: SourceSpec, options: ReaderOptions) -> list[Frame]:
    """Every frame of a finite source, decoded, sampled and resized exactly as a reader
    thread would deliver them, on the calling thread (datasets, offline evaluation).

    Raises `SourceError` (with the same message a reader reports) if it cannot be read.
    """
    try:
        source = (
            _SyntheticFrames(spec, options)
            if spec.kind is SourceKind.SYNTHETIC
            else _PyAVFrames(spec, options)
        )
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise SourceError(_describe_open_error(spec, exc)) from None
    if not source.finite:
        source.close()
        raise SourceError(f"{spec.display}: a live source has no end; give a file")
    sampler = FpsSampler(options.fps)
    frames: list[Frame] = []
    try:
        for t_s, raw in source:
            if sampler.keep(t_s):
                frames.append(
                    Frame(spec.stream_id, len(frames), t_s, time.time(), source.image(raw))
                )
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise SourceError(f"{spec.display}: {_describe_read_error(exc)}") from None
    finally:
        source.close()
    return frames


def _describe_open_error(spec: SourceSpec, exc: BaseException) -> str:
    if isinstance(exc, SourceError):
        return str(exc)
    what = {
        SourceKind.FILE: "cannot read it as video (corrupt, truncated or not a video file)",
        SourceKind.DEVICE: "cannot open the camera (check the device path and permissions)",
    }.get(spec.kind, "cannot connect (check the URL, the network and that the server is up)")
    return f"{spec.display}: {what}: {_short(exc)}"


def _describe_read_error(exc: BaseException) -> str:
    if isinstance(exc, av.error.TimeoutError | av.error.ExitError):
        return f"stalled: no data within the timeout ({_short(exc)})"
    if isinstance(exc, av.error.DecoderNotFoundError):
        return "unsupported video codec (no decoder for it); re-encode it, e.g. to H.264"
    return f"read error: {_short(exc)}"


def _short(exc: BaseException) -> str:
    # FFmpeg errors repeat the URL (with any credentials) after the reason: keep the reason.
    text = getattr(exc, "strerror", None) or str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]
