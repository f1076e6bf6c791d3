"""A real RTSP server (gst-rtsp-server) serving an H.264 mp4 without re-encoding gives the
same frames as reading the file directly: same count, same pixels."""

import numpy as np
import pytest

from stream.buffer import DropPolicy, FrameBuffer
from stream.frames import Frame
from stream.reader import ReaderState, StatusEvent, StreamReader
from stream.settings import ReaderOptions, StreamConfig
from stream.sources import parse_source
from tests.conftest import scaled
from tests.media import decode_all

pytestmark = pytest.mark.integration
RTSP_OPTIONS = {"rtsp_transport": "tcp", "timeout": "5000000", "probesize": "32"}


def read_until(spec, options, until_states, limit_s=30.0):
    """Runs a reader; returns its frames up to the first status in `until_states`."""
    import time

    buf = FrameBuffer(10_000, DropPolicy.BLOCK)
    reader = StreamReader(spec, buf, options)
    reader.start()
    frames, states, deadline = [], [], time.monotonic() + limit_s
    try:
        while time.monotonic() < deadline:
            items = buf.get_many(100)
            if not items:
                time.sleep(0.01)
            for item in items:
                if isinstance(item, Frame):
                    frames.append(item)
                else:
                    assert isinstance(item, StatusEvent)
                    states.append(item.state)
                    if item.state in until_states:
                        return frames, states
    finally:
        reader.stop()
        buf.close()
        reader.join(scaled(10))
        assert not reader.is_alive(), "reader thread did not end"
    return frames, states


def test_rtsp_passthrough_gives_the_files_exact_frames(clip_mp4, rtsp_server):
    server = rtsp_server("--source", "file", "--file", str(clip_mp4))
    direct = decode_all(str(clip_mp4))
    served = decode_all(server.url, RTSP_OPTIONS)
    assert len(served) == len(direct) == 100
    assert all(np.array_equal(a, b) for a, b in zip(direct, served, strict=True))


def test_reader_over_rtsp_matches_reader_over_the_file(clip_mp4, rtsp_server):
    server = rtsp_server("--source", "file", "--file", str(clip_mp4))
    options = ReaderOptions(
        width=160, height=120, fps=25.0, stream=StreamConfig(realtime=False, timeout_s=5.0)
    )
    from_file, states_file = read_until(parse_source(str(clip_mp4)), options, {ReaderState.ENDED})
    from_rtsp, states_rtsp = read_until(
        parse_source(server.url), options, {ReaderState.DISCONNECTED}
    )
    assert states_file == [ReaderState.CONNECTED, ReaderState.ENDED]
    # For a live source the end of the served file is a disconnect (it would reconnect).
    assert states_rtsp[:2] == [ReaderState.CONNECTED, ReaderState.DISCONNECTED]
    assert len(from_rtsp) == len(from_file) == 100
    assert all(np.array_equal(a.image, b.image) for a, b in zip(from_file, from_rtsp, strict=True))
    # stream time comes from pts * time_base on both paths: 25 fps steps
    steps = np.diff([f.pts_s - from_rtsp[0].pts_s for f in from_rtsp])
    assert np.allclose(steps, 0.04, atol=1e-3)
    assert [f.pts_s for f in from_file[:3]] == pytest.approx([0.0, 0.04, 0.08])


def test_rtsp_with_credentials_connects_and_never_shows_the_password(rtsp_server, caplog):
    server = rtsp_server("--source", "testsrc", "--user", "viewer", "--password", "s3cret")
    url = server.url.replace("rtsp://", "rtsp://viewer:s3cret@")
    spec = parse_source(url)
    options = ReaderOptions(width=32, height=32, fps=10.0, stream=StreamConfig(timeout_s=5.0))
    import logging

    with caplog.at_level(logging.DEBUG):
        frames, states = read_until(spec, options, set(), limit_s=1.5)
    assert states[0] is ReaderState.CONNECTED and len(frames) >= 5
    assert "s3cret" not in caplog.text and "s3cret" not in spec.display
    wrong = parse_source(server.url.replace("rtsp://", "rtsp://viewer:wrong@"))
    _, states = read_until(wrong, options, {ReaderState.FAILED})
    assert states == [ReaderState.FAILED]
