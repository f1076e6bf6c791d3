"""The ZeroMQ publisher with real subscribers on 127.0.0.1: heartbeats report each stream's
state as the publisher last sent it, close() sends what was queued, and a subscriber that
joins late (or before the detector binds) gets the current state as a snapshot."""

from __future__ import annotations

import dataclasses
import time

from engine.metrics import Metrics
from engine.wire.events import StreamStatus
from engine.wire.publisher import Publisher
from engine.wire.subscriber import Subscriber
from tests.conftest import free_port, scaled
from tests.engine.test_events import ONSET
from tests.integration.helpers import connect_subscriber


def offset_of(onset):
    return dataclasses.replace(
        onset,
        type="offset",
        end_s=onset.start_s + 1,
        end_wall_s=onset.start_wall_s + 1,
        reason="ended",
    )


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


def _receive_until(sub, done, timeout_s: float = 10.0) -> list[dict]:
    """Messages (heartbeats excluded) until `done(messages)` holds or the time is up."""
    out: list[dict] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not done(out):
        item = sub.receive(0.1)
        if item is not None and item[1]["type"] != "heartbeat":
            out.append(item[1])
    return out


def test_a_subscriber_that_joins_late_gets_the_streams_states_and_the_open_actions():
    metrics = Metrics()
    publisher = Publisher(
        "tcp://127.0.0.1:*",
        run_id="late",
        streams=["cam1", "cam2"],
        heartbeat_s=0.05,
        metrics=metrics,
    )
    endpoint = publisher.start()
    first = second = None
    try:
        # published while nobody listens: lost for everyone, and counted as unheard
        publisher.publish(StreamStatus("cam1", "connected"))
        publisher.publish(ONSET)  # still open
        deadline = time.monotonic() + scaled(10)
        while publisher.unheard < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert publisher.unheard >= 2 and publisher.sent == 0
        assert metrics.registry.get_sample_value("actstream_messages_unheard_total") >= 2

        first = Subscriber(endpoint)
        got = _receive_until(first, lambda m: len(m) >= 3)
        snap = [m for m in got if m.get("snapshot")]
        # cam1's status as last sent, cam2 as it stands (nothing sent yet), the open onset
        assert [(m["type"], m["stream"], m.get("state")) for m in snap] == [
            ("status", "cam1", "connected"),
            ("status", "cam2", "connecting"),
            ("onset", "cam1", None),
        ]
        assert snap[2]["event_id"] == ONSET.event_id and snap[2]["label"] == "wave"
        # the same sequence rules: a snapshot message takes the stream's next number
        assert [m["seq"] for m in snap] == [2, 0, 3]
        assert first.gaps.observe({"run_id": "late", "stream": "cam1", "seq": 4}) is None

        # live messages after the snapshot are plain, and counted as sent
        publisher.publish(offset_of(ONSET))
        live = _receive_until(first, lambda m: any(x["type"] == "offset" for x in m))
        assert live[-1]["type"] == "offset" and "snapshot" not in live[-1]
        assert live[-1]["seq"] == 4 and publisher.sent >= 1

        # once closed, the action is no longer in a joining subscriber's snapshot
        second = Subscriber(endpoint, streams=["cam1"])
        got = _receive_until(second, lambda m: len(m) >= 1)
        assert [(m["type"], m["state"], m["snapshot"]) for m in got] == [
            ("status", "connected", True)
        ]
    finally:
        for sub in (first, second):
            if sub is not None:
                sub.close()
        publisher.close()


def test_a_subscriber_connected_before_the_detector_binds_misses_nothing_it_needs():
    port = free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    sub = Subscriber(endpoint)  # connects first: ZeroMQ retries until the detector binds
    publisher = Publisher(endpoint, run_id="early", streams=["cam1"], heartbeat_s=0.05)
    try:
        publisher.start()
        # at once, before the subscription has reached the publisher (the slow joiner)
        publisher.publish(StreamStatus("cam1", "connected"))
        publisher.publish(ONSET)
        got = _receive_until(
            sub,
            lambda m: (
                {("status", "connected"), ("onset", None)}
                <= {(x["type"], x.get("state")) for x in m}
            ),
        )
        kinds = {(x["type"], x.get("state")) for x in got}
        assert ("status", "connected") in kinds and ("onset", None) in kinds, got
    finally:
        sub.close()
        publisher.close()
