"""Closing the detector ends every thread it started and closes open actions."""

import threading
import time

import pytest

from tests.conftest import free_port
from tests.integration.helpers import (
    ScriptedHead,
    connect_subscriber,
    drain,
    make_detector,
    small_config,
)

pytestmark = pytest.mark.integration


def test_close_joins_every_thread_and_ends_open_actions_as_shutdown(clip_mp4, rtsp_server):
    server = rtsp_server("--source", "testsrc")
    before = set(threading.enumerate())
    port = free_port()
    config = small_config(f"metrics.port={port}", "stream.buffer_frames=2")
    long_action = [(0.3, 1000.0, "spin", 0.9)]
    head = ScriptedHead({"file": long_action, "synth": long_action, "cam": long_action})
    # The file plays in real time into a 2-frame blocking buffer: its reader blocks in put().
    detector = make_detector(
        [f"file={clip_mp4}", "synth=synthetic://", f"cam={server.url}"],
        config,
        head,
        run_id="rs",
        metrics=True,
    )
    detector.metrics.serve("127.0.0.1", port)
    sub = connect_subscriber(detector.publisher.bound_endpoint)
    detector.start()
    stop = threading.Event()
    loop = threading.Thread(target=detector.run, args=(stop,))
    loop.start()
    time.sleep(1.5)
    stop.set()
    loop.join(5)
    t0 = time.monotonic()
    detector.close()
    assert time.monotonic() - t0 < 5.0
    assert detector.threads_alive() == []
    leftover = [t.name for t in set(threading.enumerate()) - before if t.is_alive()]
    assert leftover == []
    messages = drain(sub)
    sub.close()
    for sid in ("file", "synth", "cam"):
        mine = [m for m in messages if m["stream"] == sid]
        onsets = [m for m in mine if m["type"] == "onset"]
        offsets = [m for m in mine if m["type"] == "offset"]
        assert len(onsets) == len(offsets) == 1, sid
        assert (
            offsets[0]["reason"] == "shutdown" and offsets[0]["event_id"] == onsets[0]["event_id"]
        )
        assert mine[-1]["type"] == "status" and mine[-1]["state"] == "stopped"
