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
from collections.abc import Callable
from dataclasses import dataclass

import av

from stream.buffer import BufferClosed, DropPolicy, FrameBuffer
from stream.frame_sources import (
    FrameSource,
    describe_open_error,
    describe_read_error,
    open_frame_source,
)
from stream.frames import FpsSampler, Frame
from stream.packets import PacketRing
from stream.preview import Previews
from stream.settings import ReaderOptions
from stream.sources import SourceError, SourceKind, SourceSpec

logger = logging.getLogger(__name__)


class ReaderState(enum.Enum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    RECONNECTING = "reconnecting"
    ENDED = "ended"
    FAILED = "failed"
    STOPPED = "stopped"


FINAL_STATES = {ReaderState.ENDED, ReaderState.FAILED, ReaderState.STOPPED}
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


def put_state(
    buffer,
    stream_id: str,
    new: ReaderState,
    detail: str = "",
    *,
    start_up_error: str | None = None,
    wall_s: float | None = None,
    log: bool = True,
) -> None:
    """Logs a reader's state change and puts it into its buffer, in order with the frames (a
    closed buffer takes nothing). A source that cannot be opened at start-up is reported once,
    by its start-up error (`start_up_error`): its failure is logged as information only."""
    if log:
        bad = new is ReaderState.DISCONNECTED or (new is ReaderState.FAILED and not start_up_error)
        logger.log(
            logging.WARNING if bad else logging.INFO,
            "stream %s: %s%s",
            stream_id,
            new.value,
            f" ({detail})" if detail else "",
        )
    try:
        buffer.put(StatusEvent(stream_id, new, wall_s or time.time(), detail))
    except BufferClosed:
        pass


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
        on_decode_error: optional callback with the number of packets that could not be
            decoded (damaged media; skipped).
        on_gap: optional callback (at_s, gap_s) for each gap in a live sample stream's clock.
        opener: opens the source (default `open_frame_source`; the detector gives its own
            for sources whose transport lives in engine/, e.g. ZeroMQ sample feeds).
        rng: randomness for reconnect jitter.
        packets: where a PyAV source's encoded packets are kept (evidence clips); None: not.
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
        on_decode_error: Callable[[int], None] | None = None,
        on_gap: Callable[[float, float], None] | None = None,
        opener: Callable[..., FrameSource] | None = None,
        rng: random.Random | None = None,
        packets: PacketRing | None = None,
        previews: Previews | None = None,
    ) -> None:
        self.spec = spec
        self.previews = previews
        self.packets = packets
        self.buffer = buffer
        self.options = options
        self._on_decoded = on_decoded
        self._on_drop = on_drop
        self._on_late = on_late
        self._on_decode_error = on_decode_error
        self._on_gap = on_gap
        self._opener = opener or open_frame_source
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
        put_state(self.buffer, self.spec.stream_id, new, detail, start_up_error=self.first_error)

    def _run(self) -> None:
        if self.options.stream.reader_nice:
            try:  # Linux: each thread has its own nice value (its native id is a task id)
                tid = threading.get_native_id()
                current = os.getpriority(os.PRIO_PROCESS, tid)
                os.setpriority(
                    os.PRIO_PROCESS, tid, min(19, current + self.options.stream.reader_nice)
                )
            except (AttributeError, OSError) as exc:
                logger.debug("stream %s: reader nice not set (%s)", self.spec.stream_id, exc)
        try:
            self._loop()
        except BufferClosed:
            pass
        except Exception as exc:  # a bug: report it as a failed stream, never die silently
            logger.exception("stream %s: reader crashed", self.spec.stream_id)
            self.first_error = self.first_error or f"{self.spec.display}: reader error: {exc}"
            if self.state not in FINAL_STATES:
                self._set_state(ReaderState.FAILED, str(exc), force=True)
        finally:
            if self.state not in FINAL_STATES:
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
                message = describe_open_error(self.spec, exc)
                if not opened_once and not (
                    self.spec.live and self.options.stream.retry_first_open
                ):
                    self.first_error = message
                    self._set_state(ReaderState.FAILED, message)
                    return
                self._set_state(ReaderState.DISCONNECTED, message)
            else:
                opened_once = True
                live = not frames.finite  # an http(s) URL is a file when its server says so
                if not live and self.buffer.policy is DropPolicy.DROP_OLDEST:
                    self.buffer.policy = DropPolicy.BLOCK  # a file keeps every frame
                self._set_state(ReaderState.CONNECTED)
                if live:
                    self.first_open_done.set()  # a file is open once a frame decodes (_pump)
                try:
                    ended = self._pump(frames)
                    reason = "stream ended"
                except (av.FFmpegError, OSError, ValueError) as exc:
                    ended, reason = False, describe_read_error(exc)
                    if not live:
                        message = f"{self.spec.display}: {reason}"
                        if not self.frames_delivered:  # not one frame: a start-up mistake
                            self.first_error = message
                        self._set_state(ReaderState.FAILED, message)
                        return
                finally:
                    frames.close()
                if self._stop.is_set():
                    break
                if ended or not live:
                    self._set_state(ReaderState.ENDED)
                    return
                self._set_state(ReaderState.DISCONNECTED, reason)
                attempt = 0 if self._delivered_since_open else attempt
            if self._stop.is_set():
                break
            delay = self.options.stream.backoff.delay_s(attempt, self._rng)
            attempt += 1
            self.reconnects += 1
            self._set_state(ReaderState.RECONNECTING, f"retry in {delay:.1f} s")
            self.first_open_done.set()
            if self._stop.wait(delay):
                break
        self._set_state(ReaderState.STOPPED)

    # ---- opening ----------------------------------------------------------------------------
    def _open(self) -> FrameSource:
        self._delivered_since_open = False
        return self._opener(
            self.spec,
            self.options,
            self._on_decode_error,
            self.packets,
            stop=self._stop,
            on_gap=self._on_gap,
        )

    # ---- the decode loop ------------------------------------------------------------------
    def _pump(self, source: FrameSource) -> bool:
        """Moves frames from `source` into the buffer; True when the source really ended."""
        sampler = FpsSampler(self.options.fps)
        # Files and generated scenes are paced at their own rate; a camera paces itself.
        pace = self.options.stream.realtime and (
            source.finite or self.spec.kind is SourceKind.SYNTHETIC
        )
        wall0 = t0 = None
        period_s = 1.0 / self.options.fps
        # A generated live stream behaves as a camera: frames nobody was ready for are gone.
        # (Files keep every frame: their buffer blocks instead.)
        skip_late = self.spec.live and self.spec.kind is SourceKind.SYNTHETIC
        source_clock = getattr(source, "source_clock_s", None)  # e.g. LSL timestamps
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
            if self.previews is not None and (width := self.previews.due(self.spec.stream_id)):
                self.previews.offer(self.spec.stream_id, source.preview(raw, width, image), t_s)
            clock = source_clock(raw) if source_clock is not None else None
            frame = Frame(
                self.spec.stream_id, self.frames_delivered, t_s, time.time(), image, clock
            )
            dropped = self.buffer.put(frame)
            self.frames_delivered += 1
            if not self.first_open_done.is_set():
                self.first_open_done.set()
            self._delivered_since_open = True
            if dropped and self._on_drop is not None:
                self._on_drop(dropped)
        return source.finite
