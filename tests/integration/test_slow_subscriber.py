"""A subscriber that stops reading (`actstream subscribe` whose output nobody reads) never
slows the publisher; when it resumes it reports the messages it missed, from seq numbers."""

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from engine.wire.events import ActionEvent
from engine.wire.publisher import Publisher
from tests.conftest import free_port, scaled, wait_until

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
            f"{scaled(5):g}",
            "--hwm",
            "1000",
        ],
        stdout=subprocess.PIPE,  # not read until later: its writes block, it stops reading
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )

    def handled() -> int:  # messages the publisher thread has taken from its queue
        return publisher.sent + publisher.dropped + publisher.unheard

    try:
        # heartbeats reach the subscriber: it has connected and subscribed
        wait_until(lambda: publisher.sent >= 20, "the subscriber receiving heartbeats")
        calls, start = [], handled()
        for i in range(40_000):
            now = time.time()
            event = ActionEvent("onset", f"e{i}", "cam", "wave", 0.9, 1.0, now, 1.2, now)
            t = time.perf_counter()
            publisher.publish(event)
            calls.append(time.perf_counter() - t)
            if i % 2000 == 0:
                time.sleep(0.05)  # let the publisher thread send
        wait_until(lambda: handled() >= start + 40_000, "every event handed to ZeroMQ")
        received: list[str] = []
        reader = threading.Thread(
            target=lambda: received.extend(line.decode() for line in sub.stdout)
        )
        resumed = time.time()
        reader.start()  # the subscriber resumes

        def caught_up() -> bool:
            """A heartbeat sent after the resume has arrived: the backlog ahead of it is
            gone (ZeroMQ drops silently while a subscriber's pipe is full)."""
            return any(
                line.startswith("heartbeat ")
                and json.loads(line.split(" ", 1)[1])["wall_s"] > resumed
                for line in list(received)
            )

        wait_until(caught_up, "the subscriber reading again and through its backlog", timeout_s=30)
        before = handled()
        for i in range(5):  # after resuming it gets new messages again
            now = time.time()
            publisher.publish(
                ActionEvent("onset", f"late{i}", "cam", "wave", 0.9, 1.0, now, 1.2, now)
            )
        wait_until(lambda: handled() >= before + 5, "the late events handed to ZeroMQ")
        # closing flushes for at most 0.5 s (a loaded machine may still be draining the
        # backlog then): wait until the last one has arrived
        wait_until(
            lambda: any('"event_id":"late4"' in line for line in received),
            "the subscriber printing the last late event",
            timeout_s=30,
        )
        publisher.close()  # the subscriber exits 5 s after its last message
        _, err = sub.communicate(timeout=scaled(30))
        reader.join(scaled(10))
    finally:
        publisher.close()
        if sub.poll() is None:
            sub.kill()
    # Never blocked on the stall: all 40 000 calls returned while the subscriber read nothing,
    # and 99 % of them in microseconds. (No bound on the slowest single call: on a loaded
    # machine any thread can be descheduled for a second.)
    assert np.percentile(calls, 99) < scaled(0.005)
    err = err.decode()
    assert "actstream: gap: stream cam missed" in err, err[-500:]
    assert len([line for line in received if line.startswith("action.cam")]) < 40_005
