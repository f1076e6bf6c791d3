"""The detector loop: frames from every stream → batched backbone → per-stream temporal step
→ window of features → head every S frames → tracker → events on the publisher.

One inference thread (the caller of `run`) owns all model state; reader threads hand it
frames and status changes through bounded per-stream buffers, in order.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

import numpy as np
import torch

from engine.backends.base import Backend
from engine.config import AppConfig
from engine.metrics import Metrics
from engine.segmenter import ModelSegmenter, Segmenter, Window
from engine.tracker import Tracker, TrackEvent
from engine.wire.events import ActionEvent, StreamStatus
from engine.wire.publisher import Publisher
from engine.wire.security import CurveServer
from stream.buffer import DropPolicy, FrameBuffer
from stream.frames import Frame
from stream.reader import ReaderState, StatusEvent, StreamReader
from stream.reconnect import Backoff
from stream.settings import ReaderOptions
from stream.sources import SourceSpec

logger = logging.getLogger(__name__)

JOIN_TIMEOUT_S = 5.0


class StartupError(RuntimeError):
    """The detector cannot start; the message has one line per problem."""


class _StreamState:
    """Everything the inference thread keeps for one stream (owned by that thread)."""

    def __init__(
        self, spec: SourceSpec, reader: StreamReader, buffer: FrameBuffer, tracker: Tracker
    ):
        self.spec, self.reader, self.buffer, self.tracker = spec, reader, buffer, tracker
        self.cache = None
        self.window: torch.Tensor | None = None
        self.filled = 0
        self.pending: deque[Frame] = deque()
        self.newest: Frame | None = None
        self.last_image: np.ndarray | None = None  # the frame before the next one (motion input)
        self.since_head = 0
        self.state = ReaderState.CONNECTING.value
        self.finished = False


class Detector:
    """Runs the pipeline over several sources.

    Args:
        specs: the parsed sources.
        backend: runs the model parts.
        segmenter: window → detections (normally `ModelSegmenter`; tests inject a scripted one).
        config: the app config (stream, tracker, model sections are used).
        publisher: a started `Publisher`; closed by `close()`.
        metrics: optional `Metrics` (its endpoint is closed by `close()`).
        run_id: id of this run, the prefix of event ids.
    """

    def __init__(
        self,
        specs: list[SourceSpec],
        *,
        backend: Backend,
        segmenter: Segmenter,
        config: AppConfig,
        publisher: Publisher,
        metrics: Metrics | None = None,
        run_id: str,
    ) -> None:
        if not specs:
            raise StartupError("no sources: give at least one SOURCE")
        self.backend, self.segmenter, self.config = backend, segmenter, config
        self.publisher, self.metrics, self.run_id = publisher, metrics, run_id
        model = config.model
        self.period_s = 1.0 / model.fps
        self.window_frames = model.head.window_frames
        self.head_stride = model.head.stride_frames
        self.max_batch = config.engine.max_batch
        s = config.stream
        self.reader_options = ReaderOptions(
            width=model.backbone.image_size,
            height=model.backbone.image_size,
            fps=model.fps,
            timeout_s=s.timeout_s,
            rtsp_transport=s.rtsp_transport,
            realtime=s.realtime,
            backoff=Backoff(
                initial_s=s.reconnect_initial_s, max_s=s.reconnect_max_s, jitter=s.reconnect_jitter
            ),
            retry_first_open=s.retry_first_open,
            nice=s.reader_nice,
        )
        self._ready = threading.Event()
        self.streams: dict[str, _StreamState] = {}
        for spec in specs:
            policy = DropPolicy.DROP_OLDEST if spec.live else DropPolicy.BLOCK
            buffer = FrameBuffer(
                s.buffer_frames,
                policy,
                ready=self._ready,
                is_frame=lambda item: isinstance(item, Frame),
            )
            sid = spec.stream_id
            reader = StreamReader(
                spec,
                buffer,
                self.reader_options,
                on_decoded=self._counter("frames_decoded", sid),
                on_drop=self._counter("frames_dropped", sid, "buffer_full"),
                on_late=self._counter("frames_dropped", sid, "late"),
            )
            tracker = Tracker(
                config.tracker, frame_period_s=self.period_s, id_prefix=f"{run_id}-{sid}-"
            )
            self.streams[sid] = _StreamState(spec, reader, buffer, tracker)
            if metrics is not None:
                metrics.add_stream(sid, buffer.__len__)
        self._closed = False
        self._heads: list[tuple[_StreamState, Window, Frame]] = []

    def _counter(self, name: str, *labels: str) -> Callable[[int], None] | None:
        if self.metrics is None:
            return None
        child = getattr(self.metrics, name).labels(*labels)
        return lambda n=1: child.inc(n)

    def stream_states(self) -> dict[str, str]:
        return {sid: st.state for sid, st in self.streams.items()}

    # ---- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        """Starts every reader and waits until each has opened its source (or failed).

        Raises `StartupError` listing every source that could not be opened; nothing is left
        running then.
        """
        for st in self.streams.values():
            st.reader.start()
        deadline = time.monotonic() + 2 * self.reader_options.timeout_s + 5.0
        for st in self.streams.values():
            st.reader.first_open_done.wait(max(0.0, deadline - time.monotonic()))
        errors = [st.reader.first_error for st in self.streams.values() if st.reader.first_error]
        if errors:
            self.close(publish=False)
            raise StartupError("\n".join(errors))

    def run(self, stop: threading.Event, *, duration_s: float | None = None) -> None:
        """Processes frames until `stop` is set, `duration_s` passes, or every stream ended."""
        end = None if duration_s is None else time.monotonic() + duration_s
        while not stop.is_set():
            if end is not None and time.monotonic() >= end:
                break
            if not self.step():
                if all(st.finished for st in self.streams.values()):
                    break
                self._ready.wait(0.05)
                self._ready.clear()

    def stop_sources(self) -> None:
        """Stops every reader and joins its thread (frames already buffered stay unread)."""
        for st in self.streams.values():
            st.reader.stop()
            st.buffer.close()
        for st in self.streams.values():
            st.reader.join(JOIN_TIMEOUT_S)

    def close(self, *, publish: bool = True, reason: str = "shutdown") -> None:
        """Stops readers, ends open actions (offset with `reason`), closes the publisher and
        the metrics endpoint. Every thread is joined."""
        if self._closed:
            return
        self._closed = True
        self.stop_sources()
        if publish:
            for sid, st in self.streams.items():
                if st.newest is not None:
                    self._emit(st, st.tracker.close_all(reason, at_s=self._newest_end_s(st)))
                if not st.finished:  # its reader's last status could not reach the buffer
                    st.state = st.reader.state.value
                    self.publisher.publish(StreamStatus(sid, st.state, "detector shut down"))
        self.publisher.close()
        if self.metrics is not None:
            self.metrics.close()

    def threads_alive(self) -> list[str]:
        alive = [f"reader-{sid}" for sid, st in self.streams.items() if st.reader.is_alive()]
        if self.publisher.is_alive():
            alive.append("publisher")
        return alive

    # ---- one iteration --------------------------------------------------------------------------
    def step(self) -> bool:
        """Takes what the readers have buffered and pushes it through; False if nothing was."""
        active = [st for st in self.streams.values() if not st.finished]
        if not active:
            return False
        quota = max(1, self.max_batch // len(active))
        taken = [(st, st.buffer.get_many(quota)) for st in active]
        frames: list[Frame] = []
        previous: list[np.ndarray] = []
        for st, items in taken:
            last = st.last_image
            for item in items:
                if isinstance(item, Frame):
                    frames.append(item)
                    previous.append(item.image if last is None else last)
                    last = item.image
                else:
                    last = None  # every state change starts or ends a connection
            st.last_image = last
        features = self._encode(frames, previous) if frames else None
        k = 0
        for st, items in taken:
            for item in items:
                if isinstance(item, Frame):
                    self._on_frame(st, item, features[k : k + 1])
                    k += 1
                else:
                    self._run_heads()  # a status ends or starts a timeline: heads first
                    self._on_status(st, item)
        self._run_heads()
        return any(items for _, items in taken)

    def _encode(self, frames: list[Frame], previous: list[np.ndarray]) -> torch.Tensor:
        t0 = time.perf_counter()
        images = np.stack([f.image for f in frames])
        prev = np.stack(previous)
        t1 = time.perf_counter()
        outs = [
            self.backend.encode_frames(images[i : i + self.max_batch], prev[i : i + self.max_batch])
            for i in range(0, len(frames), self.max_batch)
        ]
        t2 = time.perf_counter()
        if self.metrics is not None:
            self.metrics.stage_seconds.labels("preprocess").observe(t1 - t0)
            self.metrics.stage_seconds.labels("backbone").observe(t2 - t1)
            self.metrics.batch_size.observe(len(frames))
        return torch.cat(outs) if len(outs) > 1 else outs[0]

    def _on_frame(self, st: _StreamState, frame: Frame, feature: torch.Tensor) -> None:
        if st.cache is None:
            st.cache = self.backend.init_cache(1)
            st.window = torch.zeros(self.window_frames, self.backend.feature_dim)
            st.filled = 0
            st.pending.clear()
        t0 = time.perf_counter()
        y, st.cache = self.backend.temporal_step(feature, st.cache)
        if self.metrics is not None:
            self.metrics.stage_seconds.labels("temporal").observe(time.perf_counter() - t0)
            self.metrics.frames_processed.labels(st.spec.stream_id).inc()
        st.pending.append(frame)
        if len(st.pending) <= self.backend.delay_frames:
            return  # the encoder has not seen enough future frames for the oldest one yet
        st.newest = st.pending.popleft()
        st.window = torch.cat([st.window[1:], y.reshape(1, -1).cpu()])
        st.filled = min(st.filled + 1, self.window_frames)
        st.since_head += 1
        if st.since_head >= self.head_stride:
            self._queue_head(st)

    def _newest_end_s(self, st: _StreamState) -> float:
        assert st.newest is not None
        return st.newest.pts_s + self.period_s

    def _queue_head(self, st: _StreamState) -> None:
        """Queues a head run on the stream's current window (a snapshot: `st.window` is
        replaced, never modified, per frame); the runs queued in one step go through the
        head network as one batch (`_run_heads`)."""
        st.since_head = 0
        if st.newest is None:
            return
        T = self.window_frames
        valid = torch.arange(T) >= T - st.filled
        end_s = self._newest_end_s(st)
        window = Window(
            st.spec.stream_id, st.window, valid, end_s - T * self.period_s, self.period_s
        )
        # The decision is taken on the newest frame received: with lookahead, frames the
        # window does not reach yet (`pending`) were already seen by the encoder.
        decision = st.pending[-1] if st.pending else st.newest
        self._heads.append((st, window, decision))

    def _run_head(self, st: _StreamState) -> None:
        self._queue_head(st)
        self._run_heads()

    def _run_heads(self) -> None:
        """Runs the queued head runs (batched when the segmenter can), then feeds each
        stream's tracker in order and publishes the events."""
        if not self._heads:
            return
        jobs, self._heads = self._heads, []
        t0 = time.perf_counter()
        many = getattr(self.segmenter, "many", None)
        if many is not None:
            found = []
            for i in range(0, len(jobs), self.max_batch):
                found.extend(many([w for _, w, _ in jobs[i : i + self.max_batch]]))
        else:
            found = [self.segmenter(w) for _, w, _ in jobs]
        t1 = time.perf_counter()
        for (st, window, newest), detections in zip(jobs, found, strict=True):
            events = st.tracker.update(
                detections, window_start_s=window.start_s, window_end_s=window.end_s
            )
            self._emit(st, events, newest)
        if self.metrics is not None:
            self.metrics.stage_seconds.labels("head").observe(t1 - t0)
            self.metrics.stage_seconds.labels("track").observe(time.perf_counter() - t1)

    def _emit(
        self, st: _StreamState, events: list[TrackEvent], newest: Frame | None = None
    ) -> None:
        """Publishes a stream's events; `newest` is the frame behind the decision (default:
        the stream's newest)."""
        if not events:
            return
        newest = newest or st.newest
        assert newest is not None

        def wall(t_s: float) -> float:
            return newest.decoded_wall_s - (newest.pts_s - t_s)

        for e in events:
            self.publisher.publish(
                ActionEvent(
                    type=e.type,
                    event_id=e.event_id,
                    stream=st.spec.stream_id,
                    label=e.label,
                    score=e.score,
                    start_s=e.start_s,
                    start_wall_s=wall(e.start_s),
                    frame_s=newest.pts_s,
                    frame_wall_s=newest.decoded_wall_s,
                    end_s=e.end_s,
                    end_wall_s=None if e.end_s is None else wall(e.end_s),
                    reason=e.reason,
                    lookahead_frames=self.backend.delay_frames,
                )
            )

    def _on_status(self, st: _StreamState, status: StatusEvent) -> None:
        state = status.state
        if state in (
            ReaderState.DISCONNECTED,
            ReaderState.ENDED,
            ReaderState.FAILED,
            ReaderState.STOPPED,
        ):
            self._finish_connection(
                st, "stream_ended" if state is ReaderState.ENDED else "disconnected"
            )
        st.state = state.value
        if state in (ReaderState.ENDED, ReaderState.FAILED, ReaderState.STOPPED):
            st.finished = True
        if self.metrics is not None:
            sid = st.spec.stream_id
            self.metrics.stream_up.labels(sid).set(1 if state is ReaderState.CONNECTED else 0)
            if state is ReaderState.RECONNECTING:
                self.metrics.reconnects.labels(sid).inc()
        self.publisher.publish(StreamStatus(st.spec.stream_id, state.value, status.detail))

    def _finish_connection(self, st: _StreamState, reason: str) -> None:
        """The connection's frames are all processed: last head run, close open actions, and
        reset the temporal state (the next connection is a new timeline)."""
        if st.newest is not None:
            if st.since_head > 0:
                self._run_head(st)
            self._emit(st, st.tracker.close_all(reason, at_s=self._newest_end_s(st)))
        st.cache = None
        st.newest = None
        st.since_head = 0


def build_detector(
    specs: list[SourceSpec],
    config: AppConfig,
    backend: Backend,
    *,
    run_id: str,
    segmenter: Segmenter | None = None,
    metrics: Metrics | None = None,
    on_sent: Callable | None = None,
    endpoint: str | None = None,
    publisher: Publisher | None = None,
) -> Detector:
    """Wires a ZeroMQ publisher (not yet started: `detector.publisher.start()` binds it; or
    the given `publisher`, anything with Publisher's methods) and a detector around
    `backend`; the segmenter defaults to the model's head."""
    if publisher is None:
        pc = config.publisher
        curve = (
            CurveServer(pc.curve_secret_key, pc.curve_clients_dir) if pc.curve_secret_key else None
        )
        publisher = Publisher(
            endpoint or pc.endpoint,
            run_id=run_id,
            heartbeat_s=pc.heartbeat_s,
            send_hwm=pc.send_hwm,
            on_sent=on_sent,
            metrics=metrics,
            curve=curve,
        )
    detector = Detector(
        specs,
        backend=backend,
        segmenter=segmenter
        or ModelSegmenter(
            backend,
            config.model.classes,
            config.decode,
            stop_below=config.tracker.onset_threshold,
        ),
        config=config,
        publisher=publisher,
        metrics=metrics,
        run_id=run_id,
    )
    publisher.set_stream_states(detector.stream_states)
    return detector
