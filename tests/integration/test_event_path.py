"""The event path, proven without trained weights: a head whose output is fixed by the test,
over a real decoded H.264 stream, → the exact events at a real ZeroMQ subscriber."""

import pytest

from tests.integration.helpers import (
    ScriptedHead,
    connect_subscriber,
    drain,
    live,
    make_detector,
    small_config,
)
from tests.media import scene_frames, write_h264_mp4

pytestmark = pytest.mark.integration

ACTIONS = [
    (0.5, 1.45, "wave", 0.9),  # seen open, then seen ending
    (2.62, 2.68, "jump", 0.8),  # begins and ends between two head runs (they run every 0.2 s)
    (3.5, 10.0, "spin", 0.7),  # still going when the file ends
]


@pytest.fixture(scope="module")
def clip10(tmp_path_factory):
    """4 s at 10 fps (the model's rate), so every frame reaches the model."""
    path = tmp_path_factory.mktemp("ep") / "clip.mp4"
    return write_h264_mp4(path, scene_frames(40, fps=10), fps=10)


@pytest.mark.parametrize("readers", ["thread", "process"])
def test_fixed_head_output_becomes_exact_onset_offset_events(clip10, readers):
    # Open tolerance of 1 frame: a segment ending more than 0.1 s before the window's end has
    # ended (with the default 2 frames, the jump below would be seen open first). Readers in
    # processes give exactly the events of reader threads.
    config = small_config(
        "stream.realtime=false", "tracker.open_tolerance_frames=1", f"stream.readers={readers}"
    )
    detector = make_detector(
        [f"clip={clip10}"], config, ScriptedHead({"clip": ACTIONS}), run_id="r1"
    )
    sub = connect_subscriber(detector.publisher.bound_endpoint)
    try:
        detector.start()
        detector.run(threading_stop(), duration_s=30)  # returns when the file has ended
    finally:
        detector.close()
    received = drain(sub, snapshots=True)
    sub.close()

    # no gaps, from 0: the snapshot the subscriber got on joining (the stream `connecting`)
    # takes the first number
    assert [m["seq"] for m in received] == list(range(len(received)))
    assert received[0]["snapshot"] and received[0]["state"] == "connecting"
    messages = [m for m in live(received) if m["type"] != "clip"]  # clips: test_clips
    assert all(m["stream"] == "clip" and m["run_id"] == "r1" for m in messages)
    summary = [
        (
            m["type"],
            m.get("state") or m["label"],
            m.get("event_id"),
            m.get("start_s"),
            m.get("end_s"),
            m.get("reason"),
        )
        for m in messages
    ]
    assert summary == [
        ("status", "connected", None, None, None, None),
        ("onset", "wave", "r1-clip-1", 0.5, None, None),
        ("offset", "wave", "r1-clip-1", 0.5, 1.45, "ended"),
        ("onset", "jump", "r1-clip-2", 2.62, None, None),
        ("offset", "jump", "r1-clip-2", 2.62, 2.68, "ended"),
        ("onset", "spin", "r1-clip-3", 3.5, None, None),
        ("offset", "spin", "r1-clip-3", 3.5, 4.0, "stream_ended"),
        ("status", "ended", None, None, None, None),
    ]
    # Each decision is taken by the first window that can show it (windows end every 0.2 s):
    # wave opens in the window ending at 0.6 s and is seen ended in the one ending at 1.6 s;
    # jump is first seen, already over, at 2.8 s; spin opens at 3.6 s; the file ends at 4.0 s.
    # Wall-clock times follow the newest frame of that window: wall = frame_wall + (t - pts).
    decided_at = {
        ("r1-clip-1", "onset"): 0.6,
        ("r1-clip-1", "offset"): 1.6,
        ("r1-clip-2", "onset"): 2.8,
        ("r1-clip-2", "offset"): 2.8,
        ("r1-clip-3", "onset"): 3.6,
        ("r1-clip-3", "offset"): 4.0,
    }
    for m in messages[1:-1]:
        newest_pts = decided_at[(m["event_id"], m["type"])] - 0.1
        expected = m["frame_wall_s"] + (m["start_s"] - newest_pts)
        assert m["start_wall_s"] == pytest.approx(expected, abs=1e-4)
        if m["type"] == "offset":
            assert m["end_wall_s"] == pytest.approx(
                m["frame_wall_s"] + m["end_s"] - newest_pts, abs=1e-4
            )
        assert m["wall_s"] >= m["frame_wall_s"]


def threading_stop():
    import threading

    return threading.Event()
