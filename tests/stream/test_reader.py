"""Readers on generated media: timestamps, sampling, pacing, ends, failures, clean stops."""

import os
import threading
import time

import numpy as np
import pytest

from stream.buffer import DropPolicy, FrameBuffer
from stream.frames import Frame
from stream.reader import ALLOWED_TRANSITIONS, ReaderState, StatusEvent, StreamReader
from stream.settings import ReaderOptions, StreamConfig
from stream.sources import parse_source
from tests.conftest import scaled, wait_until
from tests.media import scene_frames, with_display_rotation, write_h264_mp4


def collect(spec, options, limit_s=20.0, capacity=10_000):
    buf = FrameBuffer(capacity, DropPolicy.BLOCK)
    reader = StreamReader(spec, buf, options)
    t0 = time.monotonic()
    reader.start()
    reader.join(limit_s)
    elapsed = time.monotonic() - t0
    alive = reader.is_alive()
    reader.stop()
    buf.close()
    reader.join(scaled(5))
    assert not reader.is_alive()
    items = buf.get_many(capacity)
    frames = [i for i in items if isinstance(i, Frame)]
    states = [i.state for i in items if isinstance(i, StatusEvent)]
    return reader, frames, states, elapsed, alive


def test_file_frames_are_resized_rgb_stamped_and_sampled_to_the_model_fps(clip_mp4):
    opts = ReaderOptions(width=32, height=24, fps=10.0, stream=StreamConfig(realtime=False))
    reader, frames, states, _, _ = collect(parse_source(str(clip_mp4)), opts)
    assert states == [ReaderState.CONNECTED, ReaderState.ENDED]
    assert reader.frames_decoded == 100  # 4 s at 25 fps
    assert len(frames) == 40  # sampled to 10 fps
    assert frames[0].image.shape == (24, 32, 3) and frames[0].image.dtype == np.uint8
    assert [f.index for f in frames] == list(range(40))
    steps = np.diff([f.pts_s for f in frames])
    assert steps.min() >= 0.079 and steps.max() <= 0.121 and abs(steps.mean() - 0.1) < 0.005
    assert all(
        a.decoded_wall_s <= b.decoded_wall_s for a, b in zip(frames, frames[1:], strict=False)
    )


def test_files_play_at_their_own_rate_unless_fast(media_dir):
    clip = write_h264_mp4(media_dir / "two_s.mp4", scene_frames(20, fps=10), fps=10)
    spec = parse_source(str(clip))
    *_, fast_s, _ = collect(
        spec, ReaderOptions(width=16, height=16, stream=StreamConfig(realtime=False))
    )
    *_, real_s, _ = collect(
        spec, ReaderOptions(width=16, height=16, stream=StreamConfig(realtime=True))
    )
    assert real_s >= 1.8  # 20 frames at 10 fps: the last is due 1.9 s after the first
    assert fast_s < real_s / 2


def test_finite_synthetic_source_renders_its_scene_and_ends():
    spec = parse_source("synthetic://?seed=2&duration_s=2&fps=10")
    _, frames, states, _, _ = collect(
        spec, ReaderOptions(width=24, height=24, stream=StreamConfig(realtime=False))
    )
    assert states == [ReaderState.CONNECTED, ReaderState.ENDED]
    assert len(frames) == 20 and frames[5].pts_s == pytest.approx(0.5)
    assert frames[0].image.shape == (24, 24, 3)


def test_garbage_and_truncated_files_fail_with_a_message_naming_them(media_dir, clip_mp4):
    garbage = media_dir / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).bytes(50_000))
    truncated = media_dir / "truncated.mp4"
    truncated.write_bytes(clip_mp4.read_bytes()[: clip_mp4.stat().st_size // 3])
    for path in (garbage, truncated):
        reader, frames, states, _, _ = collect(
            parse_source(str(path)), ReaderOptions(stream=StreamConfig(realtime=False))
        )
        assert states == [ReaderState.FAILED], path
        assert reader.first_error.startswith(f"{path}: cannot read it as video")
        assert reader.first_open_done.is_set()


def test_audio_only_file_is_refused_as_having_no_video(media_dir):
    import av

    path = media_dir / "audio.m4a"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(
            np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
        )
        frame.sample_rate = 16000
        for _ in range(10):
            for p in stream.encode(frame):
                out.mux(p)
        for p in stream.encode():
            out.mux(p)
    reader, _, states, _, _ = collect(
        parse_source(str(path)), ReaderOptions(stream=StreamConfig(realtime=False))
    )
    assert states == [ReaderState.FAILED]
    assert "has no video stream" in reader.first_error


def test_unreachable_rtsp_fails_fast_when_refused():
    from tests.conftest import free_port

    spec = parse_source(f"rtsp://127.0.0.1:{free_port()}/none")
    reader, _, states, elapsed, _ = collect(spec, ReaderOptions(stream=StreamConfig(timeout_s=1.0)))
    assert states == [ReaderState.FAILED] and elapsed < 3
    assert "cannot connect" in reader.first_error


def test_silent_rtsp_server_is_bounded_by_the_timeout():
    import socket

    with socket.socket() as listener:  # accepts connections, never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        spec = parse_source(f"rtsp://127.0.0.1:{listener.getsockname()[1]}/x")
        reader, _, states, elapsed, alive = collect(
            spec, ReaderOptions(stream=StreamConfig(timeout_s=1.0)), limit_s=15
        )
    assert not alive and states == [ReaderState.FAILED]
    assert elapsed < 6


def test_live_reader_stops_promptly_and_reports_stopped():
    buf = FrameBuffer(4, DropPolicy.DROP_OLDEST, is_frame=lambda i: isinstance(i, Frame))
    reader = StreamReader(parse_source("synthetic://"), buf, ReaderOptions(width=16, height=16))
    reader.start()
    assert reader.first_open_done.wait(scaled(5))
    # frames keep coming into a 4-frame buffer nobody reads
    wait_until(lambda: buf.dropped >= 4, "4 frames dropped")
    t0 = time.monotonic()
    reader.stop()
    reader.join(scaled(5))
    assert not reader.is_alive() and time.monotonic() - t0 < 1.0
    assert reader.state is ReaderState.STOPPED
    assert buf.dropped >= 4  # live: the oldest frames went, counted
    items = buf.get_many(100)
    assert sum(isinstance(i, Frame) for i in items) == 4
    assert [i.state for i in items if isinstance(i, StatusEvent)] == [
        ReaderState.CONNECTED,
        ReaderState.STOPPED,
    ]


def test_transition_table_has_no_way_out_of_final_states():
    for final in (ReaderState.ENDED, ReaderState.FAILED, ReaderState.STOPPED):
        assert ALLOWED_TRANSITIONS[final] == frozenset()
    for state, targets in ALLOWED_TRANSITIONS.items():
        if targets:
            assert ReaderState.STOPPED in targets, state


@pytest.mark.skipif(not hasattr(os, "setpriority"), reason="thread priorities are Linux-only")
def test_reader_thread_runs_at_its_own_nice_value():
    """Readers yield the cores to the model: their thread (not the process) is re-niced."""
    buf = FrameBuffer(4, DropPolicy.BLOCK)
    reader = StreamReader(
        parse_source("synthetic://n?duration_s=60"),
        buf,
        ReaderOptions(stream=StreamConfig(realtime=False, reader_nice=7)),
    )
    reader.start()
    try:
        assert reader.first_open_done.wait(scaled(10))
        base = os.getpriority(os.PRIO_PROCESS, 0)
        assert os.getpriority(os.PRIO_PROCESS, reader._thread.native_id) == min(19, base + 7)
        assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == base
    finally:
        reader.stop()
        buf.close()
        reader.join(scaled(5))


@pytest.mark.parametrize("clockwise", [90, 180, 270])
def test_rotated_phone_footage_reaches_the_model_upright(tmp_path, clockwise):
    # upright picture: 96 wide, 64 high, a bright block in its top-left corner
    upright = np.full((64, 96, 3), 20, np.uint8)
    upright[:24, :32] = 235
    stored = np.ascontiguousarray(np.rot90(upright, clockwise // 90))  # turned the other way
    plain = write_h264_mp4(tmp_path / "stored.mp4", [stored] * 5, fps=10)
    phone = with_display_rotation(plain, tmp_path / "phone.mp4", clockwise)

    def first(path, **stream):
        settings = StreamConfig(realtime=False, **stream)
        options = ReaderOptions(width=48, height=32, fps=10.0, stream=settings)
        return collect(parse_source(str(path)), options)[1][0].image.astype(float)

    for image in (first(phone), first(plain, rotate=clockwise)):
        assert image.shape == (32, 48, 3)  # the model's size, upright
        assert image[:12, :16].mean() > 200 and image[16:, 24:].mean() < 60
    as_decoded = first(phone, rotate=0)
    assert as_decoded[:12, :16].mean() < 200 or as_decoded[16:, 24:].mean() > 60
    assert StreamConfig().rotate == "auto"
