"""Opened frame sources: PyAV (files, network streams, cameras) and synthetic scenes, and
`decode_file`, which decodes a whole finite source on the calling thread exactly as a reader
thread would deliver it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from stream.frames import FpsSampler, Frame, stream_time_s
from stream.hwaccel import hwaccel_for
from stream.packets import PacketRing
from stream.preview import scaled_size
from stream.settings import ReaderOptions
from stream.signals import SignalFileFrames
from stream.sources import SourceError, SourceKind, SourceSpec, av_open_args
from stream.synthetic import CLASSES, SyntheticScene

logger = logging.getLogger(__name__)

# Consecutive undecodable packets after which a live stream is treated as broken.
MAX_CONSECUTIVE_DECODE_ERRORS = 50


class FrameSource:
    """An opened source: iterate for (pts_s, raw frame); `image(raw)` gives the model's RGB
    uint8 (H, W, 3) array; `finite` says whether the source can end."""

    finite = True

    def __iter__(self) -> Iterator[tuple[float, Any]]:  # pragma: no cover - interface
        raise AssertionError("abstract")

    def image(self, raw: Any) -> np.ndarray:  # pragma: no cover - interface
        raise AssertionError("abstract")

    def preview(self, raw: Any, width: int, image: np.ndarray) -> np.ndarray:
        """The frame for the live view, at most `width` px wide (`image`: what `image(raw)`
        gave); by default the model's own frame."""
        return image

    def close(self) -> None:
        """Releases the source (containers, sockets); safe to call twice."""


class PyAVFrames(FrameSource):
    """Frames of a PyAV-opened source. Packets that do not decode (damaged or truncated
    media) are skipped and counted: `on_decode_error(n)` per packet, and one warning per
    burst (when decoding recovers or the source ends) saying how many were skipped where.
    With `packets`, every demuxed video packet is also kept there (evidence clips)."""

    def __init__(
        self,
        spec: SourceSpec,
        options: ReaderOptions,
        on_decode_error: Callable[[int], None] | None = None,
        packets: PacketRing | None = None,
    ) -> None:
        fmt, av_options = av_open_args(
            spec,
            timeout_s=options.stream.timeout_s,
            rtsp_transport=options.stream.rtsp_transport,
        )
        self.spec, self.options = spec, options
        self.finite = not spec.live
        self._rotation_logged = False
        self._on_decode_error = on_decode_error
        # One scaler per source: `VideoFrame.reformat` builds a new one per frame, which
        # costs about a third of a small frame's decode time.
        self.scaler = VideoReformatter()
        self.preview_scaler = VideoReformatter()  # its own: the model's stays cached
        # PyAV's own timeout guards open and every read, in addition to FFmpeg's socket one.
        timeout = (options.stream.timeout_s * 2,) * 2 if spec.live else None
        self.container = av.open(
            spec.url,
            format=fmt,
            options=av_options,
            timeout=timeout,
            hwaccel=hwaccel_for(options.stream.hwaccel),
        )
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
            if spec.kind is SourceKind.HTTP and "play" not in spec.params:
                # a server that reports a finite duration serves a file: played once
                self.finite = bool(self.container.duration and self.container.duration > 0)
            # (a codec FFmpeg lacks has no context: the reader reports it, nothing to keep)
            self.packets = packets if self.video.codec_context is not None else None
            if self.packets is not None:
                try:
                    packets.start_connection(self.video)
                except (av.FFmpegError, ValueError) as exc:
                    logger.warning("%s: no clips from this connection (%s)", spec.display, exc)
                    self.packets = None
        except BaseException:
            self.container.close()
            raise

    def __iter__(self) -> Iterator[tuple[float, av.VideoFrame]]:
        raw_index = 0
        burst, burst_at_s = 0, None  # undecodable packets in a row, and where they began
        last_s = 0.0
        wall0 = time.monotonic()
        keep = self.packets.add if self.packets is not None else None
        try:
            for packet in self.container.demux(self.video):
                if keep is not None:
                    keep(packet)
                try:
                    decoded = packet.decode()
                except av.InvalidDataError:
                    if self._on_decode_error is not None:
                        self._on_decode_error(1)
                    if burst == 0:
                        burst_at_s = last_s
                    burst += 1
                    if burst >= MAX_CONSECUTIVE_DECODE_ERRORS:
                        raise
                    continue
                if burst and decoded:
                    self._log_burst(burst, burst_at_s)
                    burst = 0
                for frame in decoded:
                    t_s = stream_time_s(frame.pts, frame.time_base, raw_index, self.fps)
                    if t_s is None:
                        t_s = time.monotonic() - wall0
                    raw_index += 1
                    last_s = t_s
                    yield t_s, frame
        finally:
            if burst:
                self._log_burst(burst, burst_at_s)

    def _log_burst(self, count: int, at_s: float | None) -> None:
        logger.warning(
            "%s: %d packet(s) could not be decoded after %.2f s (damaged media); skipped",
            self.spec.display,
            count,
            at_s or 0.0,
        )

    def image(self, raw: av.VideoFrame) -> np.ndarray:
        turns = self._quarter_turns(raw)
        width, height = self.options.width, self.options.height
        if turns % 2:  # resized to the turned size, then turned
            width, height = height, width
        # Resize and convert inside PyAV (libswscale), in one pass.
        img = self.scaler.reformat(raw, width=width, height=height, format="rgb24").to_ndarray()
        return np.ascontiguousarray(np.rot90(img, turns)) if turns else img

    def preview(self, raw: av.VideoFrame, width: int, image: np.ndarray) -> np.ndarray:
        turns = self._quarter_turns(raw)
        w, h = (raw.height, raw.width) if turns % 2 else (raw.width, raw.height)
        w, h = scaled_size(w, h, width)
        if turns % 2:
            w, h = h, w
        img = self.preview_scaler.reformat(raw, width=w, height=h, format="rgb24").to_ndarray()
        return np.ascontiguousarray(np.rot90(img, turns)) if turns else img

    def _quarter_turns(self, raw: av.VideoFrame) -> int:
        """Counter-clockwise quarter turns that make `raw` upright (`stream.rotate`)."""
        rotate = self.options.stream.rotate
        if rotate != "auto":
            return (-rotate // 90) % 4
        degrees = raw.rotation  # counter-clockwise, from the display matrix (0 without one)
        if not degrees:
            return 0
        turns = round(degrees / 90) % 4
        if not self._rotation_logged:
            self._rotation_logged = True
            logger.info(
                "%s: turning frames %d° clockwise as the video's display matrix says "
                "(stream.rotate: 0 keeps them as decoded)",
                self.spec.display,
                (-90 * turns) % 360,
            )
        return turns

    def close(self) -> None:
        if self.packets is not None:
            self.packets.end_connection()
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


def synthetic_fps(spec: SourceSpec, options: ReaderOptions) -> float:
    """The frame rate a `synthetic://` source plays at (`fps=`, else the model's)."""
    try:
        fps = float(spec.params.get("fps", options.fps))
    except ValueError as exc:
        raise SourceError(f"{spec.display}: bad option ({exc})") from exc
    if fps <= 0:
        raise SourceError(f"{spec.display}: fps must be positive")
    return fps


class SyntheticFrames(FrameSource):
    def __init__(self, spec: SourceSpec, options: ReaderOptions) -> None:
        self.scene = synthetic_scene(spec, options)
        duration = self.scene.duration_s
        self.fps = synthetic_fps(spec, options)
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

    def preview(self, raw: float, width: int, image: np.ndarray) -> np.ndarray:
        if not self.resize or self.scene.width <= self.options.width:
            return image
        w, h = scaled_size(self.scene.width, self.scene.height, width)
        return _resize_nearest(self.scene.render(raw), w, h)


def _resize_nearest(img: np.ndarray, width: int, height: int) -> np.ndarray:
    h, w, _ = img.shape
    ys = (np.arange(height) * h // height).clip(0, h - 1)
    xs = (np.arange(width) * w // width).clip(0, w - 1)
    return img[ys][:, xs]


def open_frame_source(
    spec: SourceSpec,
    options: ReaderOptions,
    on_decode_error: Callable[[int], None] | None = None,
    packets: PacketRing | None = None,
    *,
    stop: threading.Event | None = None,
    on_gap: Callable[[float, float], None] | None = None,
) -> Any:
    """Opens `spec` as the model's frames (a `FrameSource`): video (PyAV or a synthetic
    scene) for an image model, samples for a signal model (`options.signal`). `stop` ends a
    live sample stream's wait for data; `on_gap(at_s, gap_s)` reports gaps in its sample
    clock. Raises `SourceError` for a source this model cannot take, and what opening
    raises otherwise."""
    if spec.signal != (options.signal is not None):
        if options.signal is not None:
            raise SourceError(
                f"{spec.display}: this model takes sensor signals (model.input kind signal); "
                "give a .npy or .csv recording"
            )
        raise SourceError(
            f"{spec.display}: a sensor recording needs a signal model (model.input kind "
            "signal); give a video source to this model"
        )
    if spec.kind is SourceKind.LSL:
        from stream.lsl import LslFrames  # pylsl is needed only for lsl:// sources

        return LslFrames(spec, options, stop=stop, on_gap=on_gap)
    if spec.kind is SourceKind.SERIAL:
        from stream.serial_samples import SerialFrames  # pyserial: only for serial:// sources

        return SerialFrames(spec, options, stop=stop, on_gap=on_gap)
    if spec.kind is SourceKind.ZMQ_SAMPLES:  # ZeroMQ lives in engine/: it gives an opener
        raise SourceError(f"{spec.display}: a ZeroMQ sample feed is opened by the detector")
    if spec.kind is SourceKind.SIGNAL_FILE:
        rate = float(spec.params["rate"]) if "rate" in spec.params else None
        try:
            return SignalFileFrames(spec.url, options.signal, rate)
        except (OSError, ValueError) as exc:
            raise SourceError(f"{spec.display}: {exc}") from None
    if spec.kind is SourceKind.SYNTHETIC:
        return SyntheticFrames(spec, options)
    return PyAVFrames(spec, options, on_decode_error, packets)


def decode_file(spec: SourceSpec, options: ReaderOptions) -> list[Frame]:
    """Every frame of a finite source, decoded, sampled and resized exactly as a reader
    thread would deliver them, on the calling thread (datasets, offline evaluation).

    Raises `SourceError` (with the same message a reader reports) if it cannot be read.
    """
    try:
        source = open_frame_source(spec, options)
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise SourceError(describe_open_error(spec, exc)) from None
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
        raise SourceError(f"{spec.display}: {describe_read_error(exc)}") from None
    finally:
        source.close()
    return frames


def describe_open_error(spec: SourceSpec, exc: BaseException) -> str:
    if isinstance(exc, SourceError):
        return str(exc)
    what = {
        SourceKind.FILE: "cannot read it as video (corrupt, truncated or not a video file)",
        SourceKind.DEVICE: "cannot open the camera (check the device path and permissions)",
    }.get(spec.kind, "cannot connect (check the URL, the network and that the server is up)")
    return f"{spec.display}: {what}: {_short(exc)}"


def describe_read_error(exc: BaseException) -> str:
    if isinstance(exc, av.error.TimeoutError | av.error.ExitError):
        return f"stalled: no data within the timeout ({_short(exc)})"
    if isinstance(exc, av.error.DecoderNotFoundError):
        return "unsupported video codec (no decoder for it); re-encode it, e.g. to H.264"
    return f"read error: {_short(exc)}"


def _short(exc: BaseException) -> str:
    # FFmpeg errors repeat the URL (with any credentials) after the reason: keep the reason.
    text = getattr(exc, "strerror", None) or str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]
