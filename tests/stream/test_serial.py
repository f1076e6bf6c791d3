"""serial:// sources against a real pseudo-terminal (the kernel's serial-line driver), the
test writing a sensor's lines on the other end."""

from __future__ import annotations

import os
import tty

import numpy as np
import pytest

from stream.buffer import DropPolicy, FrameBuffer
from stream.frames import Frame
from stream.reader import ReaderState, StatusEvent, StreamReader
from stream.serial_samples import parse_sample
from stream.settings import ReaderOptions, StreamConfig
from stream.signals import SignalFraming, signal_frames
from stream.sources import SourceError, SourceKind, parse_source
from tests.conftest import scaled, wait_for_frames, wait_until

pytest.importorskip("serial")

FRAMING = SignalFraming(channels=3, sample_rate_hz=100.0, window_samples=10, hop_samples=5)


def options(timeout_s: float = 5.0) -> ReaderOptions:
    return ReaderOptions(fps=FRAMING.fps, stream=StreamConfig(timeout_s=timeout_s), signal=FRAMING)


def test_serial_source_strings():
    spec = parse_source("wrist=serial:///dev/ttyUSB0?baud=9600")
    assert spec.kind is SourceKind.SERIAL and spec.live and spec.signal
    assert spec.stream_id == "wrist" and spec.params == {"path": "/dev/ttyUSB0", "baud": "9600"}
    assert parse_source("serial:///dev/ttyACM1").params["baud"] == "115200"
    with pytest.raises(SourceError, match="three slashes"):
        parse_source("serial://dev/ttyUSB0")
    with pytest.raises(SourceError, match="baud must be"):
        parse_source("serial:///dev/ttyUSB0?baud=fast")
    with pytest.raises(SourceError, match="unknown option"):
        parse_source("serial:///dev/ttyUSB0?parity=E")


def test_a_line_is_one_sample_of_the_model_s_width():
    assert parse_sample(b"1.5, -2,3e-1\r", 3).tolist() == pytest.approx([1.5, -2.0, 0.3])
    assert parse_sample(b"1 2\t3", 3) is not None and parse_sample(b"1;2;3", 3) is not None
    for bad in (b"", b"1,2", b"1,2,3,4", b"a,b,c", b"1,nan,3", b"\xff\xfe,1,2"):
        assert parse_sample(bad, 3) is None


def test_lines_on_a_serial_port_become_the_frames_of_the_same_recording():
    master, slave = os.openpty()
    tty.setraw(slave)  # a raw line, as a sensor's USB serial port is
    path = os.ttyname(slave)
    buf = FrameBuffer(1000, DropPolicy.DROP_OLDEST)
    gaps: list[tuple[float, float]] = []
    reader = StreamReader(
        parse_source(f"imu=serial://{path}?baud=115200"),
        buf,
        options(),
        on_gap=lambda a, g: gaps.append((a, g)),
    )
    x = np.round(np.random.default_rng(0).normal(size=(200, 3)), 4).astype(np.float32)
    lines = [",".join(f"{v:.4f}" for v in row).encode() + b"\r\n" for row in x]
    lines.insert(120, b"#garbage on the wire\r\n")  # one lost sample: a gap in the clock
    reader.start()
    items: list = []
    try:
        assert wait_until(lambda: reader.state is ReaderState.CONNECTED, "connected", 10)
        for i in range(0, len(lines), 9):  # each write ends mid-line
            os.write(master, b"".join(lines[i : i + 9])[:-1])
            os.write(master, b"".join(lines[i : i + 9])[-1:])
        wait_for_frames(buf, items, 40)
    finally:
        reader.stop()
        reader.join(scaled(5))
        os.close(master)
        os.close(slave)
    assert not reader.is_alive()
    frames = [i for i in items if isinstance(i, Frame)]
    assert len(frames) == 40  # 200 samples, a frame every 5
    for f, e in zip(frames, signal_frames(x, FRAMING), strict=True):
        np.testing.assert_allclose(f.image, e, atol=1e-6)
    assert len(gaps) == 1 and gaps[0][1] == pytest.approx(0.01)  # one sample lost
    assert all(f.source_clock_s is None for f in frames)  # a serial line has no clock


def test_a_port_that_does_not_exist_is_reported_and_retried(tmp_path):
    buf = FrameBuffer(10, DropPolicy.DROP_OLDEST)
    reader = StreamReader(
        parse_source(f"serial://{tmp_path}/ttyNONE"),
        buf,
        ReaderOptions(
            fps=FRAMING.fps,
            stream=StreamConfig(timeout_s=1.0, retry_first_open=True, reconnect_initial_s=0.05),
            signal=FRAMING,
        ),
    )
    reader.start()
    try:
        assert wait_until(lambda: reader.state is ReaderState.RECONNECTING, "reconnecting", 10)
    finally:
        reader.stop()
        reader.join(scaled(5))
    details = [e.detail for e in buf.get_many(10) if isinstance(e, StatusEvent)]
    assert any("could not open port" in d and "ttyNONE" in d for d in details), details
