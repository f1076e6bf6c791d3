"""The packet ring (what it keeps, timestamps it supplies, packets it no longer has), the clip
writer on a real file (range, ordering after the offset, snapshot), retention by age and size,
and the event store's retention of rows."""

import os
import time

import av
import numpy as np
import pytest

from engine.clips import ClipsConfig, ClipWriter
from engine.metrics import Metrics
from engine.store.events import EventStore, StoreConfig
from engine.wire.events import ActionEvent, ClipReady
from engine.wire.memory import MemoryPublisher
from stream.frame_sources import PyAVFrames
from stream.packets import PacketRing
from stream.settings import ReaderOptions
from stream.sources import parse_source
from tests.conftest import wait_until
from tests.media import scene_frames, write_h264_mp4

FPS, GOP = 25, 10


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = tmp_path_factory.mktemp("clips") / "v.mp4"
    frames = scene_frames(8 * FPS, fps=FPS, width=192, height=144, seed=4)
    return write_h264_mp4(path, frames, fps=FPS, gop=GOP)


def read_into(ring: PacketRing, path) -> list[float]:
    """Reads the whole file through a PyAV source into `ring`; the frames' times."""
    source = PyAVFrames(parse_source(str(path)), ReaderOptions(), packets=ring)
    try:
        return [t for t, _ in source]
    finally:
        source.close()


def test_the_ring_keeps_keep_s_back_to_a_keyframe_and_says_when_a_packet_is_gone(video):
    ring = PacketRing(keep_s=1.0)
    times = read_into(ring, video)
    with pytest.raises(LookupError):
        ring.since(0, ring.connection)  # the file's first packets are long gone
    newest = times[-1]
    first = ring.keyframe_at(0.0, ring.connection)  # asks too far back: the oldest kept
    assert first.keyframe and newest - 1.0 - GOP / FPS < first.t_s <= newest - 1.0 + 1e-9
    packets, over = ring.since(first.seq, ring.connection)
    assert over and [p.t_s for p in packets] == pytest.approx(times[-len(packets) :])
    key = ring.keyframe_at(newest - 0.5, ring.connection)
    assert key.keyframe and newest - 0.5 - GOP / FPS < key.t_s <= newest - 0.5
    assert ring.bytes == sum(len(p.data) for p in packets)
    assert ring.since(first.seq, ring.connection + 1) == ([], True)  # another connection's


def test_a_packet_without_timestamps_is_placed_where_its_frame_is(video):
    ring = PacketRing(keep_s=5.0)
    stream = av.open(str(video)).streams.video[0]
    ring.start_connection(stream)
    for i, pts in enumerate([None, 3600, 7200]):
        packet = av.Packet(b"\x00\x00\x01\x65" + bytes(8))
        packet.pts = packet.dts = pts
        packet.time_base = stream.time_base
        packet.is_keyframe = i == 0
        ring.add(packet)
    packets, _ = ring.since(0, ring.connection)
    assert [p.pts for p in packets] == [0, 3600, 7200]


def event(kind: str, start_s: float, frame_s: float, end_s: float | None = None) -> ActionEvent:
    return ActionEvent(
        type=kind, event_id="r-v-1", stream="v", label="wave", score=0.9, start_s=start_s,
        start_wall_s=time.time(), frame_s=frame_s, frame_wall_s=time.time(), end_s=end_s,
        end_wall_s=None if end_s is None else time.time(),
        reason=None if end_s is None else "ended",
    )  # fmt: skip


def test_the_writer_cuts_pre_to_post_roll_after_the_offset_with_the_decision_frame(tmp_path, video):
    config = ClipsConfig(dir=str(tmp_path / "clips"), pre_s=1.0, post_s=0.5, lag_s=10.0)
    ring = PacketRing(config.ring_s)
    read_into(ring, video)  # 8 s: all of it kept (11 s)
    publisher = MemoryPublisher()
    writer = ClipWriter(config, {"v": ring}, publisher.publish, metrics=Metrics())
    writer.start()
    try:
        writer.on_event(event("onset", start_s=3.3, frame_s=4.0))
        writer.progress("v", 4.0)
        # The file is read to its end, yet the clip waits for its offset.
        wait_until(lambda: writer._clips, "the clip opened", timeout_s=20)
        assert publisher.messages == []
        writer.on_event(event("offset", start_s=3.3, frame_s=5.6, end_s=5.0))
        wait_until(lambda: publisher.messages, "the clip message", timeout_s=20)
    finally:
        writer.close()
    (clip,) = publisher.messages
    assert isinstance(clip, ClipReady) and clip.ended == "complete" and not clip.reencoded
    assert clip.clip_start_s == pytest.approx(2.0)  # the keyframe at or before 3.3 - 1.0
    assert clip.clip_end_s == pytest.approx(5.52)  # up to the frame at 5.48 (end + post: 5.5)
    with av.open(clip.clip_path) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    with av.open(str(video)) as c:
        source = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == round((5.52 - 2.0) * FPS)
    assert all(np.array_equal(a, b) for a, b in zip(frames, source[50:], strict=False))
    with av.open(clip.snapshot_path) as c:
        shot = next(c.decode(video=0)).to_ndarray(format="rgb24")
    assert shot.shape == (144, 192, 3)
    diffs = [np.abs(shot.astype(int) - source[i].astype(int)).mean() for i in range(95, 106)]
    assert int(np.argmin(diffs)) == 5  # frame 100: 4.0 s
    assert writer.cpu_s > 0


def test_settle_returns_once_an_ended_stream_s_clips_are_published(tmp_path, video):
    """At a stream's end the detector settles the writer before the stream's last status:
    every clip whose action the stream closed is out by then (no waiting on the clock)."""
    config = ClipsConfig(dir=str(tmp_path / "clips"), pre_s=1.0, post_s=10.0, lag_s=10.0)
    ring = PacketRing(config.ring_s)
    read_into(ring, video)  # the file was read to its end: its connection is over
    publisher = MemoryPublisher()
    writer = ClipWriter(config, {"v": ring}, publisher.publish, metrics=Metrics())
    writer.start()
    try:
        writer.progress("v", 8.0)
        writer.on_event(event("onset", start_s=3.3, frame_s=4.0))
        writer.on_event(
            event("offset", start_s=3.3, frame_s=7.9, end_s=7.5)
        )  # post-roll: past the end
        writer.settle("v")
        (clip,) = publisher.messages  # already published, not a moment later
        writer.settle("nope")  # a stream the writer does not know returns at once
    finally:
        writer.close()
    assert isinstance(clip, ClipReady) and clip.ended == "stream_ended"


def test_a_full_disk_abandons_the_clip_with_one_line_and_a_count(tmp_path, video, caplog):
    mount = tmp_path / "small"
    mount.mkdir()
    if os.system(f"mount -t tmpfs -o size=64k tmpfs {mount} 2>/dev/null") != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root); the full-disk case untested")
    try:
        config = ClipsConfig(dir=str(mount), pre_s=1.0, post_s=0.5, snapshot=False)
        ring = PacketRing(config.ring_s)
        read_into(ring, video)
        publisher, metrics = MemoryPublisher(), Metrics()
        writer = ClipWriter(config, {"v": ring}, publisher.publish, metrics=metrics)
        writer.start()
        for _ in range(3):
            writer.on_event(event("onset", start_s=1.0, frame_s=7.9))
            writer.progress("v", 7.9)
            writer.on_event(event("offset", start_s=1.0, frame_s=7.9, end_s=7.0))
        wait_until(lambda: writer.errors >= 1, "the failed write", timeout_s=20)
        writer.close()
        assert publisher.messages == [] and not list(mount.rglob("*.part"))
        lines = [r.message for r in caplog.records if "clips: cannot write" in r.message]
        assert len(lines) == 1 and "No space left on device" in lines[0], lines
        assert metrics.registry.get_sample_value("actstream_clip_errors_total") == writer.errors
    finally:
        os.system(f"umount -l {mount}")


def test_retention_deletes_what_is_too_old_then_the_oldest_until_under_the_size(tmp_path):
    root = tmp_path / "clips" / "cam" / "2026-01-01"
    root.mkdir(parents=True)
    now = time.time()
    ages_days = {"a.mp4": 40, "a.jpg": 40, "b.mp4": 3, "c.mp4": 2, "d.mp4": 1, "note.txt": 90}
    for name, age in ages_days.items():
        (root / name).write_bytes(bytes(1000))
        os.utime(root / name, (now - age * 86400, now - age * 86400))
    config = ClipsConfig(dir=str(tmp_path / "clips"), max_gb=2.5e-6)  # 2 500 bytes
    writer = ClipWriter(config, {}, lambda m: None, retain_days=30, metrics=Metrics())
    assert writer.enforce_retention() == 3  # a.* (too old), then b (the oldest) for room
    assert sorted(p.name for p in root.iterdir()) == ["c.mp4", "d.mp4", "note.txt"]
    assert writer.metrics.registry.get_sample_value("actstream_clip_folder_bytes") == 2000


def test_the_store_deletes_rows_older_than_retain_days(tmp_path):
    import json

    store = EventStore(
        StoreConfig(path=str(tmp_path / "e.db"), retain_days=7), run_id="r", model="m"
    )
    store.start()
    now = time.time()
    for i, age_days in enumerate([10, 8, 1]):
        wall = now - age_days * 86400
        common = {"run_id": "r", "stream": "s", "event_id": f"e{i}", "label": "x", "score": 0.5,
                  "start_s": 0.0, "start_wall_s": wall, "frame_s": 0.0, "frame_wall_s": wall,
                  "wall_s": wall, "seq": i}  # fmt: skip
        store.record(json.dumps({**common, "type": "onset"}))
        if i != 1:  # e1 stays open: its start counts
            store.record(json.dumps({**common, "type": "offset", "end_s": 1.0,
                                     "end_wall_s": wall + 1, "reason": "ended"}))  # fmt: skip
    try:  # the first commit, then the first expiry pass
        wait_until(lambda: _ids(tmp_path / "e.db") == ["e2"], "the old rows deleted", 20)
    finally:
        store.close()
    assert _ids(tmp_path / "e.db") == ["e2"] and store.written == 5  # all stored, then expired


def _ids(db) -> list[str]:
    import sqlite3

    with sqlite3.connect(db) as conn:
        return [r[0] for r in conn.execute("SELECT event_id FROM events ORDER BY event_id")]


def test_a_generated_stream_gets_an_encoded_clip_once_the_model_saw_its_post_roll(tmp_path):
    from stream.synthetic import SyntheticScene

    scene = SyntheticScene(seed=3, width=96, height=72, duration_s=None)
    config = ClipsConfig(dir=str(tmp_path / "clips"), pre_s=1.0, post_s=0.5)
    publisher = MemoryPublisher()
    writer = ClipWriter(config, {}, publisher.publish, scenes={"v": (scene, 10.0)})
    writer.start()
    try:
        writer.on_event(event("onset", start_s=2.05, frame_s=2.5))
        writer.on_event(event("offset", start_s=2.05, frame_s=4.5, end_s=4.0))
        writer.progress("v", 4.4)  # the post-roll (to 4.5) not seen yet
        wait_until(lambda: writer._clips, "the clip opened", timeout_s=20)
        assert publisher.messages == []
        writer.progress("v", 4.5)
        wait_until(lambda: publisher.messages, "the clip message", timeout_s=20)
    finally:
        writer.close()
    (clip,) = publisher.messages
    assert clip.reencoded and clip.ended == "complete"
    assert (clip.clip_start_s, clip.clip_end_s) == pytest.approx((1.0, 4.6))
    with av.open(clip.clip_path) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 36  # 1.0 s ... 4.5 s at 10 fps
    for k in (0, 17, 35):
        truth = SyntheticScene(seed=3, width=96, height=72).render(1.0 + k / 10)
        assert np.abs(frames[k].astype(int) - truth.astype(int)).mean() < 4.0
    with av.open(clip.snapshot_path) as c:
        shot = next(c.decode(video=0)).to_ndarray(format="rgb24")
    assert shot.shape == (72, 96, 3)
