"""`actstream proxy`: two detector processes' worth of events fan in to one endpoint and a
subscriber there gets every event exactly once, with no gaps."""

import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from engine.wire.events import StreamStatus
from engine.wire.publisher import Publisher
from engine.wire.subscriber import Subscriber
from tests.conftest import free_port, scaled, wait_until
from tests.integration.helpers import (
    ScriptedHead,
    connect_subscriber,
    drain,
    make_detector,
    small_config,
)
from tests.media import scene_frames, write_h264_mp4

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
ACTIONS = [(0.5, 1.45, "wave", 0.9), (2.0, 3.0, "jump", 0.8), (3.5, 10.0, "spin", 0.7)]


def test_two_detectors_through_the_proxy_every_event_once(tmp_path):
    clip = write_h264_mp4(tmp_path / "clip.mp4", scene_frames(40, fps=10), fps=10)
    config = small_config("stream.realtime=false")
    detectors = [
        make_detector(
            [f"cam{i}={clip}"], config, ScriptedHead({f"cam{i}": ACTIONS}), run_id=f"d{i}"
        )
        for i in (1, 2)
    ]
    bind = f"tcp://127.0.0.1:{free_port()}"
    upstreams = [a for d in detectors for a in ("--upstream", d.publisher.bound_endpoint)]
    proxy = subprocess.Popen(
        [sys.executable, "-m", "training.cli", "proxy", *upstreams, "--bind", bind],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    sub = Subscriber(bind)
    try:
        runs, deadline = set(), time.monotonic() + 20
        while runs != {"d1", "d2"} and time.monotonic() < deadline:  # joined both, via the proxy
            item = sub.receive(0.2)
            if item is not None:
                runs.add(item[1]["run_id"])
        assert runs == {"d1", "d2"}, "heartbeats of both detectors must pass the proxy"
        threads = [threading.Thread(target=d.run, args=(threading.Event(),)) for d in detectors]
        for d in detectors:
            d.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join(scaled(30))
        for d in detectors:
            d.close()
        messages = drain(sub, idle_s=1.0)
    finally:
        sub.close()
        proxy.send_signal(signal.SIGTERM)
        proxy.wait(scaled(10))
    assert proxy.returncode == 0, proxy.stderr.read()
    actions = Counter(
        (m["run_id"], m["event_id"], m["type"])
        for m in messages
        if m["type"] in ("onset", "offset")
    )
    assert len(actions) == 12 and set(actions.values()) == {1}  # 3 actions x 2 events x 2 detectors
    for run in ("d1", "d2"):
        seqs = [m["seq"] for m in messages if m["run_id"] == run and m["stream"]]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"{run}: a gap or a duplicate"


def test_proxy_without_upstreams_or_with_a_taken_port_fails_in_one_line():
    taken = free_port()
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", taken))
        s.listen()
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "training.cli",
                "proxy",
                "--upstream",
                "tcp://127.0.0.1:1",
                "--bind",
                f"tcp://127.0.0.1:{taken}",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=scaled(30),
        )
    assert result.returncode == 2 and "cannot bind" in result.stderr
    assert result.stderr.count("\n") == 1


def test_a_subscriber_joining_through_the_proxy_gets_the_detectors_snapshot():
    publisher = Publisher("tcp://127.0.0.1:*", run_id="px", streams=["cam"], heartbeat_s=0.05)
    upstream = publisher.start()
    bind = f"tcp://127.0.0.1:{free_port()}"
    proxy = subprocess.Popen(
        [sys.executable, "-m", "training.cli", "proxy", "--upstream", upstream, "--bind", bind],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    first = second = None
    try:
        first = connect_subscriber(bind)  # a subscriber already there, same prefixes
        publisher.publish(StreamStatus("cam", "connected"))
        wait_until(lambda: publisher.sent >= 30, "heartbeats through the proxy")
        second = Subscriber(bind)  # joins later, with the same subscriptions as the first

        def snapshot():
            item = second.receive(0.2)
            return item if item is not None and item[1].get("snapshot") else None

        _, message, _ = wait_until(snapshot, "the snapshot through the proxy")
        assert (message["stream"], message["state"]) == ("cam", "connected")
    finally:
        for sub in (first, second):
            if sub is not None:
                sub.close()
        proxy.send_signal(signal.SIGTERM)
        proxy.wait(scaled(10))
        publisher.close()
    assert proxy.returncode == 0, proxy.stderr.read()
