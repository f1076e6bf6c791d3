"""The ZeroMQ publisher with a real subscriber on 127.0.0.1: heartbeats report each stream's
state as the publisher last sent it, and close() sends what was queued."""

from __future__ import annotations

import time

from engine.metrics import Metrics
from engine.wire.events import StreamStatus
from engine.wire.publisher import Publisher
from tests.engine.test_events import ONSET
from tests.integration.helpers import connect_subscriber


def heartbeat_states(sub, want: dict[str, str], timeout_s: float = 10.0) -> dict[str, str]:
    """The streams of the first heartbeat that reports `want` (or the last one seen)."""
    deadline, seen = time.monotonic() + timeout_s, {}
    while time.monotonic() < deadline:
        item = sub.receive(0.2)
        if item is not None and item[1]["type"] == "heartbeat":
            seen = item[1]["streams"]
            if seen == want:
                break
    return seen


def test_heartbeats_report_the_states_the_publisher_sent():
    publisher = Publisher("tcp://127.0.0.1:*", run_id="hb", streams=["a", "b"], heartbeat_s=0.05)
    endpoint = publisher.start()
    sub = connect_subscriber(endpoint)
    try:
        assert heartbeat_states(sub, {"a": "connecting", "b": "connecting"}) == {
            "a": "connecting",
            "b": "connecting",
        }
        publisher.publish(StreamStatus("a", "connected"))
        publisher.publish(StreamStatus("b", "reconnecting", "timeout"))
        want = {"a": "connected", "b": "reconnecting"}
        assert heartbeat_states(sub, want) == want
    finally:
        sub.close()
        publisher.close()
    assert not publisher.is_alive()


def test_close_sends_what_was_queued_and_counts_the_events():
    metrics = Metrics()
    publisher = Publisher("tcp://127.0.0.1:*", run_id="q", heartbeat_s=0.05, metrics=metrics)
    sub = connect_subscriber(publisher.start())
    try:
        for _ in range(50):
            publisher.publish(ONSET)
        publisher.close()
        got = []
        while (item := sub.receive(1.0)) is not None:
            if item[1]["type"] == "onset":
                got.append(item[1]["seq"])
    finally:
        sub.close()
    assert got == list(range(50))  # per-stream sequence numbers, nothing lost
    sample = metrics.registry.get_sample_value(
        "actstream_events_published_total", {"stream": "cam1", "type": "onset", "label": "wave"}
    )
    assert sample == 50.0
