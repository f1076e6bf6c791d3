"""zmq+tcp:// sample sources against a real ZeroMQ publisher in the test process."""

from __future__ import annotations

import numpy as np
import pytest
import zmq

from engine.sample_feed import decode_chunk, encode_chunk, open_sample_feed
from stream.buffer import DropPolicy, FrameBuffer
from stream.frames import Frame
from stream.reader import ReaderState, StreamReader
from stream.settings import ReaderOptions, StreamConfig
from stream.signals import SignalFraming, signal_frames
from stream.sources import SourceError, parse_source
from tests.conftest import free_port, wait_until

FRAMING = SignalFraming(channels=3, sample_rate_hz=100.0, window_samples=10, hop_samples=5)


def test_chunks_round_trip_and_bad_ones_say_why():
    x = np.arange(12, dtype=np.int16).reshape(4, 3)
    header, back = decode_chunk(encode_chunk(x, 100.0, t0_s=5.0))
    assert header["t0_s"] == 5.0 and header["dtype"] == "int16"
    np.testing.assert_array_equal(back, x.astype(np.float32))
    with pytest.raises(ValueError, match="expected 2 frames"):
        decode_chunk([b"{}"])
    with pytest.raises(ValueError, match="bad header"):
        decode_chunk([b"not json", b""])
    with pytest.raises(ValueError, match="not a whole number of 3-value rows"):
        decode_chunk([encode_chunk(x, 100.0)[0], b"\x00" * 7])
    with pytest.raises(SourceError, match="expected zmq\\+tcp://HOST:PORT"):
        parse_source("zmq+tcp://127.0.0.1")


def test_published_chunks_become_frames_and_bad_messages_are_skipped(caplog):
    port = free_port()
    pub = zmq.Context.instance().socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind(f"tcp://127.0.0.1:{port}")
    buf = FrameBuffer(1000, DropPolicy.DROP_OLDEST)
    gaps: list = []
    reader = StreamReader(
        parse_source(f"zmq+tcp://127.0.0.1:{port}"),
        buf,
        ReaderOptions(fps=FRAMING.fps, stream=StreamConfig(timeout_s=5.0), signal=FRAMING),
        on_gap=lambda at_s, gap_s: gaps.append(gap_s),
        opener=open_sample_feed,
    )
    reader.start()
    x = np.random.default_rng(0).normal(size=(200, 3)).astype(np.float32)
    items: list = []
    try:
        # a subscriber misses what was published before it joined: probe until a frame made
        # of the probe arrives (a status item alone comes before the subscription is live)
        probe = np.zeros((5, 3), np.float32)
        wait_until(
            lambda: (
                pub.send_multipart(encode_chunk(probe, 100.0, t0_s=-10.0))
                or any(isinstance(i, Frame) for i in buf.get_many(1000))
            ),
            "the subscriber to hear the sender",
        )
        pub.send_multipart([b"{broken", b""])  # skipped, the stream goes on
        pub.send_multipart(encode_chunk(np.zeros((5, 4), np.float32), 100.0))  # wrong width
        for i in range(0, 200, 20):  # chunks of 20 samples, 0.7 s of clock lost after 100
            t0 = i / 100.0 + (0.7 if i >= 100 else 0.0)
            pub.send_multipart(encode_chunk(x[i : i + 20], 100.0, t0_s=t0))
        wait_until(
            lambda: (
                items.extend(buf.get_many(1000)) or sum(isinstance(i, Frame) for i in items) >= 40
            ),
            "40 frames",
        )
    finally:
        reader.stop()
        reader.join(5)
        pub.close()
    assert not reader.is_alive()
    frames = [i for i in items if isinstance(i, Frame)][-40:]
    # after the probe's zeros, the frames of the 200 samples: the first few windows still
    # reach back into the probe, the rest are exactly the recording's
    expected = signal_frames(x, FRAMING)
    for f, e in zip(frames[3:], expected[3:], strict=True):
        np.testing.assert_array_equal(f.image, e)
    assert frames[-1].source_clock_s == pytest.approx(1.99 + 0.7)
    assert any(g == pytest.approx(0.7, abs=1e-6) for g in gaps)
    assert reader.state is not ReaderState.FAILED
    warned = [r.getMessage() for r in caplog.records if "skipped a message" in r.getMessage()]
    assert any("bad header" in w for w in warned)
    assert any("has 4 channels but the model takes 3" in w for w in warned)
