"""Building a detector from a config: every stream's buffer, reader and tracker, the ZeroMQ
publisher, the metrics and the model's segmenter, wired into a `Detector`."""

from __future__ import annotations

import threading
from collections.abc import Callable

from engine.backends.base import Backend
from engine.clips import ClipWriter
from engine.config import AppConfig
from engine.detector import Detector, StreamParts
from engine.metrics import Metrics
from engine.sample_feed import open_sample_feed
from engine.segmenter import ModelSegmenter, Segmenter
from engine.tracker import Tracker
from engine.wire.publisher import Publisher
from engine.wire.security import CurveServer
from models.action_model import ModelConfig
from stream.buffer import DropPolicy, FrameBuffer
from stream.frame_sources import synthetic_fps, synthetic_scene
from stream.frames import Frame
from stream.packets import PacketRing
from stream.preview import Previews
from stream.reader import StreamReader
from stream.reader_process import ReaderProcess, runs_in_process
from stream.settings import ReaderOptions
from stream.signals import SignalFraming
from stream.sources import SourceError, SourceKind, SourceSpec


def signal_framing(model: ModelConfig) -> SignalFraming | None:
    """How readers cut samples into this model's frames (None: it takes video frames)."""
    if model.input is None:
        return None
    return SignalFraming(
        channels=model.input.channels,
        sample_rate_hz=model.input.sample_rate_hz,
        window_samples=model.input.window_samples,
        hop_samples=model.input.hop_samples,
    )


def reader_options(config: AppConfig) -> ReaderOptions:
    """How the readers open and pace sources for this config's model."""
    model = config.model
    size = model.backbone.image_size
    return ReaderOptions(
        width=size,
        height=size,
        fps=model.fps,
        stream=config.stream,
        signal=signal_framing(model),
    )


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
    on_frame: Callable[[str, float], None] | None = None,
    on_decision: Callable[[str, float], None] | None = None,
    previews: Previews | None = None,
) -> Detector:
    """Builds every part from the config and wires the detector: per stream a buffer (drop
    oldest for live sources, block for files), a reader and a tracker (event ids prefixed
    with `run_id`); a ZeroMQ publisher (not yet started: `detector.publisher.start()` binds
    it) unless `publisher` is given; the model's head as segmenter unless one is given;
    with `clips.enabled`, a packet ring per PyAV stream and the clip writer.
    `on_frame(stream_id, t_s)`: called for every frame the model processes; `on_decision(stream_id,
    latency_s)` after every head run's decision; `previews`: where
    the readers leave frames for the live view while someone watches."""
    metrics = metrics or Metrics()
    if publisher is None:
        pc = config.publisher
        curve = (
            CurveServer(pc.curve_secret_key, pc.curve_clients_dir) if pc.curve_secret_key else None
        )
        publisher = Publisher(
            endpoint or pc.endpoint,
            run_id=run_id,
            streams=[s.stream_id for s in specs],
            heartbeat_s=pc.heartbeat_s,
            send_hwm=pc.send_hwm,
            on_sent=on_sent,
            metrics=metrics,
            curve=curve,
        )
    ready = threading.Event()
    options = reader_options(config)
    period_s = 1.0 / config.model.fps
    streams = []
    rings: dict[str, PacketRing] = {}
    scenes: dict[str, tuple] = {}
    for spec in specs:
        sid = spec.stream_id
        if config.clips.enabled and spec.kind is SourceKind.SYNTHETIC:
            try:  # the writer's own copy of the scene (it extends its schedule as it renders)
                scenes[sid] = (synthetic_scene(spec, options), synthetic_fps(spec, options))
            except SourceError:
                pass  # its reader reports the bad option at start-up
        elif config.clips.enabled and not spec.signal:  # clips are of video
            rings[sid] = PacketRing(config.clips.ring_s)
        buffer = FrameBuffer(
            config.stream.buffer_frames,
            DropPolicy.DROP_OLDEST if spec.live else DropPolicy.BLOCK,
            ready=ready,
            is_frame=lambda item: isinstance(item, Frame),
        )
        counters = dict(
            on_decoded=_counter(metrics.frames_decoded.labels(sid)),
            on_drop=_counter(metrics.frames_dropped.labels(sid, "buffer_full")),
            on_late=_counter(metrics.frames_dropped.labels(sid, "late")),
            on_decode_error=_counter(metrics.decode_errors.labels(sid)),
        )
        if config.stream.readers == "process" and runs_in_process(spec):
            reader = ReaderProcess(
                spec, buffer, options, packets=rings.get(sid), previews=previews, **counters
            )
        else:
            reader = StreamReader(
                spec,
                buffer,
                options,
                on_gap=lambda at_s, gap_s, c=metrics.sample_gaps.labels(sid): c.inc(),
                opener=open_sample_feed if spec.kind is SourceKind.ZMQ_SAMPLES else None,
                packets=rings.get(sid),
                previews=previews,
                **counters,
            )
        tracker = Tracker(config.tracker, frame_period_s=period_s, id_prefix=f"{run_id}-{sid}-")
        streams.append(StreamParts(spec, buffer, tracker, reader))
    segmenter = segmenter or ModelSegmenter(
        backend, config.model.classes, config.decode, stop_below=config.tracker.keep_threshold
    )
    clips = None
    if rings or scenes:
        clips = ClipWriter(
            config.clips,
            rings,
            publisher.publish,
            retain_days=config.store.retain_days,
            metrics=metrics,
            scenes=scenes,
        )
    return Detector(
        streams,
        backend=backend,
        segmenter=segmenter,
        config=config,
        publisher=publisher,
        metrics=metrics,
        ready=ready,
        on_frame=on_frame,
        on_decision=on_decision,
        clips=clips,
    )


def _counter(child) -> Callable[[int], None]:
    return lambda n=1: child.inc(n)
