"""Three concurrent streams — an H.264 mp4 played as a live file, synthetic://, and a real
RTSP camera — through one detector: events published for each, per-stream sequence numbers
without gaps, and /metrics frame counters equal to what the readers decoded."""

import threading

import pytest

from engine.wire.events import EVENT_SCHEMA
from tests.conftest import free_port, scaled
from tests.integration.helpers import (
    ScriptedHead,
    connect_subscriber,
    drain,
    live,
    make_detector,
    scrape,
    small_config,
    wait_for_events,
)

pytestmark = pytest.mark.integration
ACTION = [(0.6, 1.5, "wave", 0.9)]


def test_three_streams_publish_gapless_events_and_metrics_match_readers(clip_mp4, rtsp_server):
    import jsonschema

    server = rtsp_server("--source", "testsrc")
    port = free_port()
    config = small_config(f"metrics.port={port}")
    sources = [f"file={clip_mp4}", "synth=synthetic://?seed=1", f"cam={server.url}"]
    head = ScriptedHead({"file": ACTION, "synth": ACTION, "cam": ACTION})
    detector = make_detector(sources, config, head, run_id="r3", metrics=True)
    detector.metrics.serve("127.0.0.1", port)
    sub = connect_subscriber(detector.publisher.bound_endpoint)
    stop, thread = None, None
    try:
        detector.start()
        stop, thread = threading.Event(), None
        thread = threading.Thread(target=detector.run, args=(stop,))
        thread.start()
        wait_for_events(port, ("file", "synth", "cam"), "offset", "wave", "each action over")
        stop.set()
        thread.join(scaled(10))
        assert not thread.is_alive()
        detector.stop_sources()
        metrics = scrape(port)
        decoded = {sid: st.reader.frames_decoded for sid, st in detector.streams.items()}
    finally:
        if stop is not None:
            stop.set()
        detector.close()
    received = drain(sub, snapshots=True)
    sub.close()

    for sid in ("file", "synth", "cam"):
        everything = [m for m in received if m["stream"] == sid]  # the snapshot first
        assert [m["seq"] for m in everything] == list(range(len(everything))), sid
        mine = live(everything)
        kinds = [(m["type"], m.get("label")) for m in mine]
        assert kinds[0] == ("status", None) and mine[0]["state"] == "connected"
        assert ("onset", "wave") in kinds and ("offset", "wave") in kinds, (sid, kinds)
        assert decoded[sid] > 10
        assert metrics[("actstream_frames_decoded_total", (("stream", sid),))] == decoded[sid]
        events = metrics[
            (
                "actstream_events_published_total",
                (("label", "wave"), ("stream", sid), ("type", "onset")),
            )
        ]
        assert events == 1
    for m in received:
        jsonschema.validate(m, EVENT_SCHEMA)
    # the RTSP camera runs at 25 fps: more decoded than the model's 10 fps needs
    processed = metrics[("actstream_frames_processed_total", (("stream", "cam"),))]
    assert processed < decoded["cam"]
    assert metrics[("actstream_stream_up", (("stream", "cam"),))] == 1
    assert not detector.threads_alive()
