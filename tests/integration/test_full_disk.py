"""A full disk under the clips folder and the event store (a small tmpfs): the detector keeps
detecting and publishing every event, says so in one line per part, and exits cleanly; when
the disk fills while it runs and then frees, the store loses no event."""

import json
import os
import signal
import sqlite3
import subprocess

import pytest

from tests.conftest import CMD, free_port, scaled
from tests.integration.helpers import Running
from tests.media import scene_frames, write_h264_mp4

pytestmark = pytest.mark.integration


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    if os.system(f"mount -t tmpfs -o size=320k tmpfs {mount} 2>/dev/null") != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root); the full-disk case untested")
    yield mount
    os.system(f"umount -l {mount}")


def test_a_full_disk_keeps_the_detector_publishing_with_one_clear_line(tmp_path, small_disk):
    video = write_h264_mp4(
        tmp_path / "scene.mp4", scene_frames(500, fps=25, width=384, height=288, seed=5), fps=25
    )
    done = subprocess.run(
        [*CMD, "run", "--config", "configs/demo.yaml", str(video), "--fast", "--no-metrics",
         "--zmq", "tcp://127.0.0.1:0", "--store", str(small_disk / "events.db"),
         "--clips", str(small_disk / "clips")],
        capture_output=True, text=True, timeout=scaled(180),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    messages = [json.loads(line.split(" ", 1)[1]) for line in done.stdout.splitlines()]
    onsets = {m["event_id"] for m in messages if m["type"] == "onset"}
    offsets = {m["event_id"] for m in messages if m["type"] == "offset"}
    clips = {m["event_id"] for m in messages if m["type"] == "clip"}
    assert len(onsets) >= 5 and onsets == offsets  # every action published, start and end
    assert clips < onsets  # some clips fitted, then the disk was full
    assert messages[-1]["type"] in ("status", "heartbeat") and any(
        m.get("state") == "ended" for m in messages
    )
    lines = done.stderr.splitlines()
    clip_errors = [line for line in lines if "clips: cannot write" in line]
    assert clip_errors and all("No space left on device" in x for x in clip_errors), lines
    assert "Traceback" not in done.stderr


def test_a_disk_that_fills_while_running_then_frees_loses_no_stored_event(small_disk):
    """The disk under the event store fills up while the detector runs (another file takes
    the space), then frees: the store says so once and carries on, keeping every event of the
    full spell and committing it once there is room. (Clips on a full disk: the test above.)"""
    run = Running(
        "--config", "configs/demo.yaml", "cam=synthetic://?seed=5", "--no-metrics", "--no-clips",
        "--zmq", f"tcp://127.0.0.1:{free_port()}", "--store", str(small_disk / "events.db"),
    )  # fmt: skip
    try:

        def count(kind: str) -> int:
            return sum(line.startswith(kind) for line in list(run.lines))

        run.wait_until(lambda: count("action.cam.offset") >= 1, "a first action", 120)
        filler = small_disk / "filler"
        with open(filler, "wb") as f:  # take every byte left
            try:
                while True:
                    f.write(bytes(16384))
                    f.flush()
            except OSError:
                pass
        onsets = count("action.cam.onset")
        run.wait_until(lambda: count("action.cam.onset") >= onsets + 2,
                       "onsets published on the full disk", 90)  # fmt: skip
        filler.unlink()
        db = small_disk / "events.db"
        run.wait_until(lambda: _stored(db) >= _published(run), "the kept events committed", 60)
        code, stderr, _ = run.stop(signal.SIGINT)
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
    assert code == 0, stderr
    assert "Traceback" not in stderr
    store_errors = [x for x in stderr.splitlines() if "event store" in x and "cannot write" in x]
    assert len(store_errors) == 1 and "full" in store_errors[0], stderr
    published = [json.loads(line.split(" ", 1)[1]) for line in run.lines
                 if line.startswith("action.")]  # fmt: skip
    with sqlite3.connect(small_disk / "events.db") as conn:
        rows = {r[0] for r in conn.execute("SELECT event_id FROM events")}
    assert {m["event_id"] for m in published} == rows


def _published(run: Running) -> int:
    return len({json.loads(line.split(" ", 1)[1])["event_id"] for line in list(run.lines)
                if line.startswith("action.")})  # fmt: skip


def _stored(db) -> int:
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    except sqlite3.Error:
        return 0
