"""A subscriber that stops reading (`actstream subscribe` whose output nobody reads) never
slows the publisher; when it resumes it reports the messages it missed, from seq numbers."""

import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from engine.wire.events import ActionEvent
from engine.wire.publisher import Publisher
from tests.conftest import free_port

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_stalled_subscriber_does_not_slow_the_publisher_and_reports_the_gap_after():
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    publisher = Publisher(endpoint, run_id="slow", heartbeat_s=0.2, send_hwm=1000)
    publisher.start()
    sub = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "training.cli",
            "subscribe",
            "--zmq",
            endpoint,
            "--timeout-s",
            "5",
            "--hwm",
            "1000",
        ],
        stdout=subprocess.PIPE,  # not read until later: its writes block, it stops reading
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 15
        while publisher.sent < 20 and time.monotonic() < deadline:
            time.sleep(0.1)  # heartbeats: let the subscriber connect
        time.sleep(1.0)
        calls = []
        for i in range(40_000):
            now = time.time()
            event = ActionEvent("onset", f"e{i}", "cam", "wave", 0.9, 1.0, now, 1.2, now)
            t = time.perf_counter()
            publisher.publish(event)
            calls.append(time.perf_counter() - t)
            if i % 2000 == 0:
                time.sleep(0.05)  # let the publisher thread send
        time.sleep(1.0)
        out: list[bytes] = []
        reader = threading.Thread(target=lambda: out.append(sub.stdout.read()))
        reader.start()  # the subscriber resumes
        time.sleep(1.0)
        for i in range(5):  # after resuming it gets new messages again
            now = time.time()
            publisher.publish(
                ActionEvent("onset", f"late{i}", "cam", "wave", 0.9, 1.0, now, 1.2, now)
            )
        time.sleep(1.0)
        publisher.close()  # the subscriber exits 5 s after its last message
        _, err = sub.communicate(timeout=30)
        reader.join(10)
    finally:
        publisher.close()
        if sub.poll() is None:
            sub.kill()
    # Never blocked on the stall: all 40 000 calls returned while the subscriber read nothing,
    # and 99 % of them in microseconds. (No bound on the slowest single call: on a loaded
    # machine any thread can be descheduled for a second.)
    assert np.percentile(calls, 99) < 0.005
    err = err.decode()
    assert "actstream: gap: stream cam missed" in err, err[-500:]
    received = out[0].decode().splitlines()
    assert any('"event_id":"late4"' in line for line in received)
    assert len([line for line in received if line.startswith("action.cam")]) < 40_005
