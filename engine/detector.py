"""The detector loop: frames from every stream → batched backbone → per-stream temporal step
→ window of features → head every S frames → tracker → events on the publisher.

One inference thread (the caller of `run`, or of `step` in tests) owns all model state;
reader threads hand it frames and status changes through bounded per-stream buffers, in
order. The detector takes its parts built (`engine.build.build_detector` builds them from a
config): each stream's buffer, tracker and (optionally) reader, the backend, the segmenter,
the publisher and the metrics.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from engine.backends.base import Backend
from engine.clips import ClipWriter
from engine.config import AppConfig
from engine.metrics import Metrics
from engine.segmenter import Segmenter, Window
from engine.timeline import StreamTimeline
from engine.tracker import Tracker, TrackEvent
from engine.wire.events import ActionEvent, StreamStatus
from engine.wire.publisher import Publisher
from models.fastback import split_cache, stack_caches
from stream.buffer import FrameBuffer
from stream.frames import Frame
from stream.reader import FINAL_STATES, ReaderState, StatusEvent, StreamReader
from stream.reader_process import ReaderProcess
from stream.sources import SourceSpec

JOIN_TIMEOUT_S = 1.5  # for all readers together, at shutdown
# Reader states after which the connection's frames are all in; the last three are final.
_CONNECTION_OVER = (
    ReaderState.DISCONNECTED,
    ReaderState.ENDED,
    ReaderState.FAILED,
    ReaderState.STOPPED,
)


class StartupError(RuntimeError):
    """The detector cannot start; the message has one line per problem."""


@dataclass
class StreamParts:
    """One stream's built parts: its buffer (frames and `StatusEvent`s, in order), its
    tracker, and the reader that fills the buffer (None: something else fills it, e.g. a
    test)."""

    spec: SourceSpec
    buffer: FrameBuffer
    tracker: Tracker
    reader: StreamReader | ReaderProcess | None = None


class _StreamState:
    """Everything the inference thread keeps for one stream (owned by that thread)."""

    def __init__(self, parts: StreamParts, timeline: StreamTimeline) -> None:
        self.spec, self.reader = parts.spec, parts.reader
        self.buffer, self.tracker = parts.buffer, parts.tracker
        self.timeline = timeline
        self.cache = None  # the encoder's cache; None until the connection's first frame
        self.last_image: np.ndarray | None = None  # the frame before the next one (motion input)
        self.state = ReaderState.CONNECTING.value
        self.finished = False


class Detector:
    """Runs the pipeline over several streams.

    Args:
        streams: each stream's built parts.
        backend: runs the model parts.
        segmenter: window → detections (normally `ModelSegmenter`; tests inject a scripted one).
        config: the app config (its model, engine.max_batch and stream.timeout_s are used).
        publisher: a started publisher (`Publisher`, or `MemoryPublisher`); closed by `close()`.
        metrics: the `Metrics` every stage reports to (its endpoint is closed by `close()`).
        ready: set by the buffers when an item arrives (the loop waits on it when idle).
        on_frame: `(stream_id, t_s)` for every frame the model processes.
        on_decision: `(stream_id, latency_s)` after every head run's decision: wall time now
            − the decode wall time of the run's newest frame (the benchmarks' latency).
        clips: cuts each action's evidence clip (None: no clips); started by `start()`,
            closed by `close()` before the publisher.
    """

    def __init__(
        self,
        streams: list[StreamParts],
        *,
        backend: Backend,
        segmenter: Segmenter,
        config: AppConfig,
        publisher: Publisher,
        metrics: Metrics,
        ready: threading.Event | None = None,
        on_frame: Callable[[str, float], None] | None = None,
        on_decision: Callable[[str, float], None] | None = None,
        clips: ClipWriter | None = None,
    ) -> None:
        if not streams:
            raise StartupError("no sources: give at least one SOURCE")
        self.backend, self.segmenter, self.config = backend, segmenter, config
        self.publisher, self.metrics = publisher, metrics
        self.on_frame, self.on_decision = on_frame, on_decision
        self.clips = clips
        model = config.model
        self.period_s = 1.0 / model.fps
        self.sample_rate_hz = model.input.sample_rate_hz if model.input is not None else None
        self.max_batch = config.engine.max_batch
        self.start_timeout_s = 2 * config.stream.timeout_s + 5.0
        self._ready = ready or threading.Event()
        self.streams: dict[str, _StreamState] = {}
        for parts in streams:
            sid = parts.spec.stream_id
            timeline = StreamTimeline(
                stream_id=sid,
                window_frames=model.head.window_frames,
                feature_dim=backend.feature_dim,
                delay_frames=backend.delay_frames,
                head_stride=config.engine.head_stride or model.head.stride_frames,
                frame_period_s=self.period_s,
            )
            self.streams[sid] = _StreamState(parts, timeline)
            metrics.add_stream(sid, parts.buffer.__len__)
        self._closed = False
        self._heads: list[tuple[_StreamState, Window, Frame]] = []

    def _readers(self) -> list[StreamReader | ReaderProcess]:
        return [st.reader for st in self.streams.values() if st.reader is not None]

    # ---- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        """Starts every reader and waits until each has opened its source (or failed).

        Raises `StartupError` listing every source that could not be opened; nothing is left
        running then.
        """
        if self.clips is not None:
            self.clips.start()
        for reader in self._readers():
            reader.start()
        deadline = time.monotonic() + self.start_timeout_s
        for reader in self._readers():
            reader.first_open_done.wait(max(0.0, deadline - time.monotonic()))
        errors = [r.first_error for r in self._readers() if r.first_error]
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
        """Stops every reader and joins their threads, all within `JOIN_TIMEOUT_S` (frames
        already buffered stay unread). A reader stuck in a read (a frozen server) is left
        behind: its thread is a daemon, and its stream is reported stopped."""
        for st in self.streams.values():
            if st.reader is not None:
                st.reader.stop()
            st.buffer.close()
        deadline = time.monotonic() + JOIN_TIMEOUT_S
        for reader in self._readers():
            reader.join(max(0.0, deadline - time.monotonic()))

    def clock(self, stream_id: str) -> tuple[float, float] | None:
        """(stream time, decode wall time) of the stream's newest processed frame, or None
        (unknown stream, or no frame since its connection began); any thread may ask."""
        st = self.streams.get(stream_id)
        newest = st.timeline.newest if st is not None else None
        return None if newest is None else (newest.pts_s, newest.decoded_wall_s)

    def close(self, *, publish: bool = True, reason: str = "shutdown") -> None:
        """Stops readers, ends open actions (offset with `reason`), closes the publisher and
        the metrics endpoint. Every thread is joined."""
        if self._closed:
            return
        self._closed = True
        self.stop_sources()
        if publish:
            for st in self.streams.values():
                if st.timeline.newest is not None:
                    self._emit(st, st.tracker.close_all(reason, at_s=st.timeline.end_s))
            if self.clips is not None:  # the clips being recorded end here; their messages go
                self.clips.close()  # out before each stream's last status
            for sid, st in self.streams.items():
                if not st.finished:  # its reader's last status could not reach the buffer
                    detail = "detector shut down"
                    if st.reader is not None and st.reader.is_alive():
                        st.state = ReaderState.STOPPED.value  # stuck in a read: abandoned
                        detail += " (its source did not answer; the read was abandoned)"
                    elif st.reader is not None:
                        st.state = st.reader.state.value
                    self.publisher.publish(StreamStatus(sid, st.state, detail))
        if self.clips is not None:
            self.clips.close()  # (closed already when publishing)
        self.publisher.close()
        self.metrics.close()

    def threads_alive(self) -> list[str]:
        alive = [
            f"reader-{sid}"
            for sid, st in self.streams.items()
            if st.reader and st.reader.is_alive()
        ]
        if self.publisher.is_alive():
            alive.append("publisher")
        return alive

    # ---- one iteration --------------------------------------------------------------------------
    def step(self) -> bool:
        """Takes what the buffers hold and pushes it through; False if they held nothing."""
        active = [st for st in self.streams.values() if not st.finished]
        if not active:
            return False
        quota = max(1, self.max_batch // len(active))
        taken = [(st, st.buffer.get_many(quota)) for st in active]
        # Each stream's items in order, a frame with its index into the batch to encode.
        frames: list[Frame] = []
        previous: list[np.ndarray] = []
        order: list[tuple[_StreamState, list[tuple[Frame | StatusEvent, int | None]]]] = []
        for st, items in taken:
            last, seq = st.last_image, []
            for item in items:
                if isinstance(item, Frame):
                    seq.append((item, len(frames)))
                    frames.append(item)
                    previous.append(item.image if last is None else last)
                    last = item.image
                else:
                    seq.append((item, None))
                    last = None  # every state change starts or ends a connection
            st.last_image = last
            order.append((st, seq))
        features = self._encode(frames, previous) if frames else None
        # Round r takes every stream's r-th item: its frames go through one temporal step
        # together, then its statuses; each stream's items stay in their order.
        for r in range(max(len(seq) for _, seq in order)):
            now = [(st, *seq[r]) for st, seq in order if r < len(seq)]
            batch = [(st, item, i) for st, item, i in now if i is not None]
            for j in range(0, len(batch), self.max_batch):
                self._on_frames(batch[j : j + self.max_batch], features)
            statuses = [(st, item) for st, item, i in now if i is None]
            if statuses:
                self._run_heads()  # a status ends or starts a timeline: heads first
                for st, item in statuses:
                    self._on_status(st, item)
        self._run_heads()
        if self.clips is not None:  # every event up to each stream's newest frame is out
            for st, _items in taken:
                if st.timeline.newest is not None:
                    self.clips.progress(st.spec.stream_id, st.timeline.newest.pts_s)
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
        self.metrics.stage_seconds.labels("preprocess").observe(t1 - t0)
        self.metrics.stage_seconds.labels("backbone").observe(t2 - t1)
        self.metrics.batch_size.observe(len(frames))
        return torch.cat(outs) if len(outs) > 1 else outs[0]

    def _on_frames(
        self, batch: list[tuple[_StreamState, Frame, int]], features: torch.Tensor
    ) -> None:
        """One new frame for each of several streams (each stream at most once): one
        temporal-step call over their stacked caches, then each stream's window and head."""
        for st, _frame, _i in batch:
            if st.cache is None:
                st.cache = self.backend.init_cache(1)
                st.timeline.start()
        t0 = time.perf_counter()
        x = features[[i for _, _, i in batch]]
        y, cache = self.backend.temporal_step(x, stack_caches([st.cache for st, _, _ in batch]))
        caches = split_cache(cache) if len(batch) > 1 else [cache]
        self.metrics.stage_seconds.labels("temporal").observe(time.perf_counter() - t0)
        for b, (st, frame, _i) in enumerate(batch):
            st.cache = caches[b]
            self.metrics.frames_processed.labels(st.spec.stream_id).inc()
            if self.on_frame is not None:
                self.on_frame(st.spec.stream_id, frame.pts_s)
            if st.timeline.push(frame, y[b : b + 1]):
                self._queue_head(st)

    def _queue_head(self, st: _StreamState) -> None:
        """Queues a head run on the stream's current window; the runs queued in one step go
        through the head network as one batch (`_run_heads`)."""
        job = st.timeline.head_input()
        if job is not None:
            self._heads.append((st, *job))

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
        for (st, window, decision), detections in zip(jobs, found, strict=True):
            events = st.tracker.update(
                detections, window_start_s=window.start_s, window_end_s=window.end_s
            )
            self._emit(st, events, decision)
            latency = time.time() - decision.decoded_wall_s
            self.metrics.frame_to_decision_seconds.labels(st.spec.stream_id).observe(latency)
            if self.on_decision is not None:
                self.on_decision(st.spec.stream_id, latency)
        self.metrics.stage_seconds.labels("head").observe(t1 - t0)
        self.metrics.stage_seconds.labels("track").observe(time.perf_counter() - t1)

    def _emit(
        self, st: _StreamState, events: list[TrackEvent], decision: Frame | None = None
    ) -> None:
        """Publishes a stream's events; `decision` is the frame behind them (default: the
        stream's newest)."""
        if not events:
            return
        decision = decision or st.timeline.newest
        assert decision is not None

        def wall(t_s: float) -> float:
            return decision.decoded_wall_s - (decision.pts_s - t_s)

        for e in events:
            event = ActionEvent(
                type=e.type,
                event_id=e.event_id,
                stream=st.spec.stream_id,
                label=e.label,
                score=e.score,
                start_s=e.start_s,
                start_wall_s=wall(e.start_s),
                frame_s=decision.pts_s,
                frame_wall_s=decision.decoded_wall_s,
                end_s=e.end_s,
                end_wall_s=None if e.end_s is None else wall(e.end_s),
                reason=e.reason,
                lookahead_frames=self.backend.delay_frames,
                late=e.late,
                sample_rate_hz=self.sample_rate_hz if st.spec.signal else None,
                source_clock_s=decision.source_clock_s,
            )
            self.publisher.publish(event)
            if self.clips is not None:
                self.clips.on_event(event)

    def _on_status(self, st: _StreamState, status: StatusEvent) -> None:
        state = status.state
        if state in _CONNECTION_OVER:
            self._finish_connection(
                st, "stream_ended" if state is ReaderState.ENDED else "disconnected"
            )
            if self.clips is not None:  # the connection's clips end: their messages first
                self.clips.settle(st.spec.stream_id)
        st.state = state.value
        if state in FINAL_STATES:
            st.finished = True
        sid = st.spec.stream_id
        self.metrics.stream_up.labels(sid).set(1 if state is ReaderState.CONNECTED else 0)
        if state is ReaderState.RECONNECTING:
            self.metrics.reconnects.labels(sid).inc()
        self.publisher.publish(StreamStatus(sid, state.value, status.detail))

    def _finish_connection(self, st: _StreamState, reason: str) -> None:
        """The connection's frames are all processed: last head run, close open actions, and
        reset the temporal state (the next connection is a new timeline)."""
        if st.timeline.newest is not None:
            if st.timeline.since_head > 0:
                self._queue_head(st)
                self._run_heads()
            self._emit(st, st.tracker.close_all(reason, at_s=st.timeline.end_s))
        st.cache = None
        st.timeline.end()
