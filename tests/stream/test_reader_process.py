"""Readers in child processes: the same frames, statuses, packets and previews as a thread
reader; a child killed (SIGKILL) or frozen (SIGSTOP) is restarted as a reconnect while another
stream keeps flowing."""

import os
import signal
import threading
import time

import numpy as np
import pytest

from stream.buffer import DropPolicy, FrameBuffer
from stream.frames import Frame
from stream.packets import PacketRing
from stream.preview import Previews
from stream.reader import ReaderState, StatusEvent, StreamReader
from stream.reader_process import ReaderProcess, runs_in_process
from stream.settings import ReaderOptions, StreamConfig
from stream.sources import parse_source
from tests.conftest import scaled, wait_until
from tests.media import scene_frames, write_h264_mp4

FAST = dict(reconnect_initial_s=0.2, reconnect_max_s=0.5, reconnect_jitter=0.1)


def read_all(reader_type, spec, options, **kw):
    """Every item a reader delivers for a file, and the reader."""
    buf = FrameBuffer(8, DropPolicy.BLOCK, is_frame=lambda i: isinstance(i, Frame))
    reader = reader_type(spec, buf, options, **kw)
    items: list = []
    reader.start()
    deadline = time.monotonic() + scaled(60)
    while time.monotonic() < deadline:
        items += buf.get_many(100)
        if items and isinstance(items[-1], StatusEvent) and items[-1].state is ReaderState.ENDED:
            break
        time.sleep(0.01)
    reader.stop()
    buf.close()
    reader.join(scaled(5))
    assert not reader.is_alive()
    return reader, items


def test_a_reader_process_delivers_a_file_exactly_as_a_thread_reader_does(media_dir):
    path = write_h264_mp4(media_dir / "proc.mp4", scene_frames(60, fps=25, seed=9), fps=25)
    spec = parse_source(str(path))
    options = ReaderOptions(width=48, height=32, fps=10.0, stream=StreamConfig(realtime=False))
    rings = {kind: PacketRing(60.0) for kind in ("thread", "process")}
    t_reader, t_items = read_all(StreamReader, spec, options, packets=rings["thread"])
    p_reader, p_items = read_all(ReaderProcess, spec, options, packets=rings["process"])

    def frames(items):
        return [i for i in items if isinstance(i, Frame)]

    def states(items):
        return [(i.state, i.detail) for i in items if isinstance(i, StatusEvent)]

    assert (
        states(p_items) == states(t_items) == [(ReaderState.CONNECTED, ""), (ReaderState.ENDED, "")]
    )
    assert len(frames(p_items)) == len(frames(t_items)) == 24  # 2.4 s sampled to 10 fps
    for a, b in zip(frames(t_items), frames(p_items), strict=True):
        assert (a.index, a.pts_s, a.stream_id) == (b.index, b.pts_s, b.stream_id)
        assert a.image.shape == b.image.shape == (32, 48, 3) and np.array_equal(a.image, b.image)
    assert p_reader.frames_decoded == t_reader.frames_decoded == 60
    assert p_reader.frames_delivered == 24 and p_reader.state is ReaderState.ENDED
    # the evidence ring: the same packets and codec, so clips and snapshots are the same
    t_ring, p_ring = rings["thread"], rings["process"]
    t_packets, _ = t_ring.since(0, 1)
    p_packets, _ = p_ring.since(0, 1)
    assert [(p.data, p.pts, p.dts, p.keyframe, p.t_s) for p in p_packets] == [
        (p.data, p.pts, p.dts, p.keyframe, p.t_s) for p in t_packets
    ]
    assert len(p_packets) == 60 and not p_ring.open
    assert (p_ring.codec.decoder, p_ring.codec.time_base, p_ring.codec.extradata) == (
        t_ring.codec.decoder, t_ring.codec.time_base, t_ring.codec.extradata,
    )  # fmt: skip
    snapshot = p_ring.frame_at(1.0, 1).to_ndarray(format="rgb24")
    assert np.array_equal(snapshot, t_ring.frame_at(1.0, 1).to_ndarray(format="rgb24"))


def test_a_reader_process_that_cannot_open_its_file_fails_with_the_readers_message(tmp_path):
    bad = tmp_path / "notvideo.mp4"
    bad.write_bytes(b"this is not a video" * 100)
    spec = parse_source(str(bad))
    buf = FrameBuffer(4, DropPolicy.BLOCK, is_frame=lambda i: isinstance(i, Frame))
    reader = ReaderProcess(spec, buf, ReaderOptions())
    reader.start()
    assert reader.first_open_done.wait(scaled(20))
    reader.join(scaled(10))
    assert not reader.is_alive() and reader.state is ReaderState.FAILED
    assert "notvideo.mp4" in reader.first_error
    items = buf.get_many(10)
    assert [i.state for i in items] == [ReaderState.FAILED]


def test_sensor_streams_stay_on_threads():
    assert runs_in_process(parse_source("synthetic://"))
    assert not runs_in_process(parse_source("lsl://imu"))
    with pytest.raises(ValueError, match="threads"):
        ReaderProcess(parse_source("lsl://imu"), FrameBuffer(2, DropPolicy.BLOCK), ReaderOptions())


class Watched:
    """A live reader process and everything it delivers, drained by a thread."""

    def __init__(self, source: str, **stream):
        options = ReaderOptions(width=16, height=16, stream=StreamConfig(**FAST, **stream))
        self.buf = FrameBuffer(64, DropPolicy.DROP_OLDEST, is_frame=lambda i: isinstance(i, Frame))
        self.previews = Previews()
        self.reader = ReaderProcess(parse_source(source), self.buf, options, previews=self.previews)
        self.items: list = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain)
        self.reader.start()
        self._thread.start()

    def _drain(self):
        while not self._stop.wait(0.01):
            self.items += self.buf.get_many(100)

    def frames(self) -> int:
        return sum(isinstance(i, Frame) for i in list(self.items))

    def states(self) -> list[ReaderState]:
        return [i.state for i in list(self.items) if isinstance(i, StatusEvent)]

    def close(self):
        self.reader.stop()
        self.reader.join(scaled(5))
        self._stop.set()
        self._thread.join(scaled(5))
        assert not self.reader.is_alive() and not self._thread.is_alive()


@pytest.mark.parametrize("how", ["SIGKILL", "SIGSTOP"])
def test_a_killed_or_frozen_reader_process_restarts_as_a_reconnect_and_the_other_flows(how):
    victim = Watched("victim=synthetic://", reader_hang_s=2.0)
    other = Watched("other=synthetic://?seed=4", reader_hang_s=2.0)
    try:
        wait_until(lambda: victim.frames() >= 5 and other.frames() >= 5, "both streams flowing")
        first_pid = victim.reader.pid
        os.kill(first_pid, getattr(signal, how))
        before_other = other.frames()
        wait_until(
            lambda: victim.states()[-1:] == [ReaderState.CONNECTED] and len(victim.states()) > 1,
            f"the {how} reader restarted",
        )
        assert victim.states() == [
            ReaderState.CONNECTED,
            ReaderState.DISCONNECTED,
            ReaderState.RECONNECTING,
            ReaderState.CONNECTING,
            ReaderState.CONNECTED,
        ]
        detail = next(
            i.detail for i in victim.items if getattr(i, "state", None) is ReaderState.DISCONNECTED
        )
        assert ("died (SIGKILL)" if how == "SIGKILL" else "hung (silent for 2 s); killed") in detail
        assert victim.reader.pid != first_pid and victim.reader.restarts == 1
        # the other stream kept flowing, never interrupted; the restarted one flows again,
        # indices going on
        wait_until(lambda: other.frames() >= before_other + 5, "the other stream flowing")
        assert other.states() == [ReaderState.CONNECTED]
        n = victim.frames()
        wait_until(lambda: victim.frames() >= n + 5, "the restarted stream flowing")
        indices = [i.index for i in list(victim.items) if isinstance(i, Frame)]
        assert indices == list(range(len(indices)))
        # a preview asked of the new child arrives (encoded there)
        victim.previews.watch("victim", "w", width=32, fps=10)
        wait_until(lambda: victim.previews.latest("victim") is not None, "a preview")
        assert victim.previews.latest("victim").jpeg[:2] == b"\xff\xd8"
    finally:
        victim.close()
        other.close()
        if how == "SIGSTOP":  # the frozen child was killed, not left stopped
            with pytest.raises(ProcessLookupError):
                os.kill(first_pid, 0)
    assert victim.states()[-1] is ReaderState.STOPPED
