"""The detector driven from its buffers, on the calling thread: no readers, no sockets; the
in-memory publisher keeps what it publishes."""

from __future__ import annotations

import numpy as np
import torch

from engine.backends.torch_backend import TorchBackend
from engine.detector import Detector, StreamParts
from engine.metrics import Metrics
from engine.segmenter import ModelSegmenter, Window
from engine.tracker import Tracker
from engine.wire.events import ActionEvent, StreamStatus
from engine.wire.memory import MemoryPublisher
from models.action_model import build_model
from models.heads import head_family
from models.postprocess import DecodeConfig
from stream.buffer import DropPolicy, FrameBuffer
from stream.frames import Frame
from stream.reader import ReaderState, StatusEvent
from stream.sources import parse_source
from tests.integration.helpers import ScriptedHead, small_config

CONFIG = small_config()  # 10 fps, window 16, head every 2 frames
BACKEND = TorchBackend(build_model(CONFIG.model))
SIZE = CONFIG.model.backbone.image_size


def detector(ids: list[str], head) -> tuple[Detector, MemoryPublisher, dict[str, FrameBuffer]]:
    buffers = {sid: FrameBuffer(1000, DropPolicy.BLOCK) for sid in ids}
    parts = [
        StreamParts(
            parse_source("synthetic://", stream_id=sid),
            buffers[sid],
            Tracker(CONFIG.tracker, frame_period_s=0.1, id_prefix=f"t-{sid}-"),
        )
        for sid in ids
    ]
    sink = MemoryPublisher()
    det = Detector(
        parts, backend=BACKEND, segmenter=head, config=CONFIG, publisher=sink, metrics=Metrics()
    )
    return det, sink, buffers


def feed(buffer: FrameBuffer, sid: str, n: int, *, first: int = 0) -> None:
    rng = np.random.default_rng(first)
    for i in range(first, first + n):
        image = rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
        buffer.put(Frame(sid, i, i * 0.1, 1000.0 + i * 0.1, image))


def status(sid: str, state: ReaderState) -> StatusEvent:
    return StatusEvent(sid, state, 0.0)


def run_until_idle(det: Detector) -> int:
    steps = 0
    while det.step():
        steps += 1
        assert steps < 10_000
    return steps


def test_one_action_gives_one_onset_and_one_offset_and_the_stream_its_states():
    det, sink, buffers = detector(["a"], ScriptedHead({"a": [(1.0, 2.0, "wave", 0.9)]}))
    buffers["a"].put(status("a", ReaderState.CONNECTED))
    feed(buffers["a"], "a", 40)
    buffers["a"].put(status("a", ReaderState.ENDED))
    assert run_until_idle(det) > 0
    events = [m for m in sink.messages if isinstance(m, ActionEvent)]
    assert [(e.type, e.label, e.event_id) for e in events] == [
        ("onset", "wave", "t-a-1"),
        ("offset", "wave", "t-a-1"),
    ]
    onset, offset = events
    assert 1.0 <= onset.frame_s < 1.3  # decided within a head run of its start
    assert offset.reason == "ended" and offset.end_s == 2.0
    states = [m.state for m in sink.messages if isinstance(m, StreamStatus)]
    assert states == ["connected", "ended"] and det.streams["a"].finished


def test_a_disconnect_closes_that_streams_action_while_the_other_goes_on():
    head = ScriptedHead({s: [(0.5, 100.0, "spin", 0.8)] for s in ("a", "b")})
    det, sink, buffers = detector(["a", "b"], head)
    for sid in ("a", "b"):
        buffers[sid].put(status(sid, ReaderState.CONNECTED))
        feed(buffers[sid], sid, 20)
    buffers["a"].put(status("a", ReaderState.DISCONNECTED))
    run_until_idle(det)
    offsets = [m for m in sink.messages if isinstance(m, ActionEvent) and m.type == "offset"]
    assert [(e.stream, e.reason) for e in offsets] == [("a", "disconnected")]
    before = len(sink.messages)
    feed(buffers["b"], "b", 10, first=20)
    run_until_idle(det)
    later = sink.messages[before:]
    assert not [m for m in later if isinstance(m, ActionEvent)]  # b's action still open
    assert det.streams["b"].timeline.newest.index == 29
    det.close()
    shutdown = [m for m in sink.messages if isinstance(m, ActionEvent) and m.reason == "shutdown"]
    assert [e.stream for e in shutdown] == ["b"] and sink.closed


def test_a_reconnected_stream_is_a_new_timeline_with_new_event_ids():
    head = ScriptedHead({"a": [(0.5, 100.0, "spin", 0.8)]})
    det, sink, buffers = detector(["a"], head)
    buffers["a"].put(status("a", ReaderState.CONNECTED))
    feed(buffers["a"], "a", 10)
    buffers["a"].put(status("a", ReaderState.DISCONNECTED))
    buffers["a"].put(status("a", ReaderState.RECONNECTING))
    buffers["a"].put(status("a", ReaderState.CONNECTING))
    buffers["a"].put(status("a", ReaderState.CONNECTED))
    feed(buffers["a"], "a", 10, first=10)
    run_until_idle(det)
    onsets = [m.event_id for m in sink.messages if isinstance(m, ActionEvent) and m.type == "onset"]
    assert onsets == ["t-a-1", "t-a-2"]
    assert (
        det.metrics.registry.get_sample_value("actstream_stream_reconnects_total", {"stream": "a"})
        == 1.0
    )


def test_the_model_segmenter_is_the_head_family_decoding_placed_in_stream_time():
    config = CONFIG.model
    # an untrained head scores near its prior: keep every candidate
    decode = DecodeConfig(pre_nms_threshold=0.0, min_score=0.0, min_duration_frames=0.0)
    segmenter = ModelSegmenter(BACKEND, config.classes, decode)
    T = config.head.window_frames
    torch.manual_seed(0)
    window = Window(
        "a", torch.randn(T, BACKEND.feature_dim), torch.ones(T, dtype=torch.bool), 3.0, 0.1
    )
    out = BACKEND.head(window.features[None], window.valid[None])
    expected = head_family(config.head).window_segments(config.head, out, 0, decode, 0.0)
    found = segmenter(window)
    assert len(found) == len(expected) > 0
    for d, (s, e, k, score) in zip(found, expected, strict=True):
        assert (d.start_s, d.end_s, d.label, d.score) == (
            3.0 + s * 0.1,
            3.0 + e * 0.1,
            config.classes[k],
            score,
        )
