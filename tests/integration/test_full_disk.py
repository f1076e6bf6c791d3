"""A full disk under the clips folder and the event store (a small tmpfs): the detector keeps
detecting and publishing every event, says so in one line per part, and exits cleanly."""

import json
import os
import subprocess

import pytest

from tests.conftest import CMD, scaled
from tests.media import scene_frames, write_h264_mp4

pytestmark = pytest.mark.integration


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    if os.system(f"mount -t tmpfs -o size=160k tmpfs {mount} 2>/dev/null") != 0:
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
    assert len(clip_errors) == 1 and "No space left on device" in clip_errors[0], lines
    assert "Traceback" not in done.stderr
