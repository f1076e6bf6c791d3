"""lsl:// sources against a real Lab Streaming Layer outlet in the test process."""

from __future__ import annotations

import time
import uuid

import numpy as np
import pytest

from stream.buffer import DropPolicy, FrameBuffer
from stream.frames import Frame
from stream.reader import ReaderState, StatusEvent, StreamReader
from stream.settings import ReaderOptions, StreamConfig
from stream.signals import SignalFraming, signal_frames
from stream.sources import SourceError, SourceKind, parse_source
from tests.conftest import scaled, wait_for_frames, wait_until

pylsl = pytest.importorskip("pylsl")

FRAMING = SignalFraming(channels=3, sample_rate_hz=100.0, window_samples=10, hop_samples=5)


def outlet(name: str, channels: int = 3, rate: float = 100.0):
    info = pylsl.StreamInfo(name, "IMU", channels, rate, "float32", f"src-{name}")
    return pylsl.StreamOutlet(info)


def options(timeout_s: float = 5.0) -> ReaderOptions:
    return ReaderOptions(fps=FRAMING.fps, stream=StreamConfig(timeout_s=timeout_s), signal=FRAMING)


def test_lsl_source_strings():
    spec = parse_source("wrist=lsl://imu-wrist")
    assert spec.kind is SourceKind.LSL and spec.live and spec.signal
    assert spec.stream_id == "wrist" and spec.params == {"name": "imu-wrist"}
    with pytest.raises(SourceError, match="lsl://NAME"):
        parse_source("lsl://")


def test_live_samples_become_the_frames_of_the_same_recording():
    name = f"act-{uuid.uuid4().hex[:8]}"
    out = outlet(name)
    buf = FrameBuffer(1000, DropPolicy.DROP_OLDEST)
    gaps: list[tuple[float, float]] = []
    reader = StreamReader(
        parse_source(f"lsl://{name}"), buf, options(), on_gap=lambda a, g: gaps.append((a, g))
    )
    reader.start()
    x = np.random.default_rng(0).normal(size=(200, 3)).astype(np.float32)
    t0 = pylsl.local_clock()
    stamps = t0 + np.arange(200) / 100.0
    stamps[150:] += 0.5  # the sensor lost half a second (50 samples) here
    items: list = []
    try:
        assert wait_until(lambda: reader.state is ReaderState.CONNECTED, "connected", 10)
        # the inlet may miss what was pushed before it subscribed: push once it is there
        assert wait_until(lambda: out.have_consumers(), "an LSL consumer", 10)
        for i in range(0, 200, 7):  # chunks of any size
            out.push_chunk(x[i : i + 7].tolist(), stamps[min(i + 6, 199)])
        wait_for_frames(buf, items, 40)
    finally:
        reader.stop()
        reader.join(scaled(5))
    assert not reader.is_alive()
    frames = [i for i in items if isinstance(i, Frame)]
    assert len(frames) == 40  # 200 samples, a frame every 5
    expected = signal_frames(x, FRAMING)
    for f, e in zip(frames, expected, strict=True):
        np.testing.assert_array_equal(f.image, e)
    # stream time runs from the first frame; the frame keeps the source clock
    clocks = np.array([f.source_clock_s for f in frames])
    # (LSL itself may stamp the one sample before a gap from the one after it)
    far = np.r_[0:29, 31:40]  # frames not next to the gap (between samples 149 and 150)
    np.testing.assert_allclose(clocks[far], stamps[4::5][far], atol=1e-6)
    np.testing.assert_allclose([f.pts_s for f in frames], clocks - clocks[0], atol=1e-6)
    assert len(gaps) == 1 and gaps[0][1] == pytest.approx(0.5, abs=1e-3)
    states = [i.state for i in items if isinstance(i, StatusEvent)]
    assert ReaderState.CONNECTED in states


def test_a_stream_of_another_shape_or_none_at_all_is_refused():
    name = f"act-{uuid.uuid4().hex[:8]}"
    out = outlet(name, channels=6)  # noqa: F841 - kept alive for the reader to find
    for source, message in [
        (f"lsl://{name}", "has 6 channels but the model takes 3"),
        (f"lsl://none-{name}", "no LSL stream named"),
    ]:
        buf = FrameBuffer(10, DropPolicy.DROP_OLDEST)
        reader = StreamReader(parse_source(source), buf, options(timeout_s=1.0))
        reader.start()
        reader.join(scaled(10))
        assert not reader.is_alive()
        assert reader.state is ReaderState.FAILED
        assert message in (reader.first_error or ""), reader.first_error


def test_a_silent_stream_is_a_disconnect_and_stop_is_prompt():
    name = f"act-{uuid.uuid4().hex[:8]}"
    out = outlet(name)  # noqa: F841 - connected, never sends
    buf = FrameBuffer(10, DropPolicy.DROP_OLDEST)
    reader = StreamReader(parse_source(f"lsl://{name}"), buf, options(timeout_s=0.5))
    reader.start()
    seen: list = []
    try:
        assert wait_until(
            lambda: (
                seen.extend(buf.get_many(10))
                or any(
                    isinstance(i, StatusEvent) and i.state is ReaderState.DISCONNECTED for i in seen
                )
            ),
            "a disconnect",
            10,
        )
    finally:
        t = time.monotonic()
        reader.stop()
        reader.join(scaled(5))
    assert not reader.is_alive() and time.monotonic() - t < scaled(2)
