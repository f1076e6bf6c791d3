import json
import re
from pathlib import Path

import jsonschema
import pytest

from engine.wire.events import (
    EVENT_SCHEMA,
    ActionEvent,
    ClipReady,
    Heartbeat,
    StreamStatus,
    decode,
    encode,
)
from engine.wire.subscriber import GapDetector, matches, topic_prefixes

README = Path(__file__).resolve().parents[2] / "README.md"

ONSET = ActionEvent(
    type="onset",
    event_id="ab12-cam1-1",
    stream="cam1",
    label="wave",
    score=0.91,
    start_s=12.3,
    start_wall_s=1700000012.3,
    frame_s=12.8,
    frame_wall_s=1700000012.8,
)
OFFSET = ActionEvent(
    type="offset",
    event_id="ab12-cam1-1",
    stream="cam1",
    label="wave",
    score=0.91,
    start_s=12.3,
    start_wall_s=1700000012.3,
    frame_s=15.1,
    frame_wall_s=1700000015.1,
    end_s=14.5,
    end_wall_s=1700000014.5,
    reason="ended",
)
STATUS = StreamStatus("cam1", "reconnecting", "retry in 1.0 s")
BEAT = Heartbeat(12.5, {"cam1": "connected"})
CLIP = ClipReady(
    stream="cam1",
    event_id="ab12-cam1-1",
    label="wave",
    clip_path="/var/clips/cam1/2026-12-02/ab12-cam1-1.mp4",
    snapshot_path=None,
    clip_start_s=9.0,
    clip_end_s=17.6,
    bytes=123456,
    reencoded=False,
    ended="complete",
)


@pytest.mark.parametrize(
    "message", [ONSET, OFFSET, STATUS, CLIP, BEAT], ids=lambda m: type(m).__name__
)
def test_every_message_type_validates_against_the_schema(message):
    topic, payload = encode(message, run_id="ab12", seq=7, wall_s=1700000015.2)
    body = json.loads(payload)
    jsonschema.validate(body, EVENT_SCHEMA)
    assert decode([topic, payload]) == (topic.decode(), body)
    assert body["seq"] == 7 and body["run_id"] == "ab12"


def test_topics_put_the_widest_filter_first():
    assert ONSET.topic == "action.cam1.onset.wave"
    assert OFFSET.topic == "action.cam1.offset.wave"
    assert STATUS.topic == "status.cam1.reconnecting"
    assert BEAT.topic == "heartbeat"
    assert CLIP.topic == "clip.cam1.wave"


def test_offset_carries_duration_and_reason():
    body = json.loads(encode(OFFSET, run_id="r", seq=0, wall_s=0.0)[1])
    assert body["duration_s"] == pytest.approx(2.2) and body["reason"] == "ended"


def test_schema_rejects_an_onset_without_its_label():
    body = json.loads(encode(ONSET, run_id="r", seq=0, wall_s=0.0)[1])
    del body["label"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(body, EVENT_SCHEMA)


def test_readme_documents_every_field_of_the_schema():
    text = README.read_text()
    section = text[text.index("## Events on the wire") :]
    section = section[section.index("Fields:") : section.index("\n## ", 5)]
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", section, flags=re.M))
    assert documented == set(EVENT_SCHEMA["properties"])


def test_decode_refuses_foreign_messages():
    with pytest.raises(ValueError):
        decode([b"x", b'{"hello": 1}'])
    with pytest.raises(ValueError):
        decode([b"only one frame"])


def test_gap_detector_reports_missed_sequence_numbers_per_stream():
    g = GapDetector()
    seen = [
        g.observe({"run_id": "r", "stream": s, "seq": n})
        for s, n in [("a", 0), ("b", 0), ("a", 1), ("a", 4), ("b", 1), ("a", 5)]
    ]
    gaps = [x for x in seen if x is not None]
    assert len(gaps) == 1 and (gaps[0].stream, gaps[0].first, gaps[0].last, gaps[0].missed) == (
        "a",
        2,
        3,
        2,
    )
    assert g.observe({"run_id": "new", "stream": "a", "seq": 0}) is None  # a restarted detector


def test_topic_prefixes_follow_the_filters():
    assert topic_prefixes([], []) == ["action.", "clip.", "heartbeat", "status."]
    assert topic_prefixes(["cam1"], []) == [
        "action.cam1.offset.",
        "action.cam1.onset.",
        "clip.cam1.",
        "heartbeat",
        "status.cam1.",
    ]
    assert topic_prefixes(["cam1"], ["clip"]) == ["clip.cam1."]
    assert topic_prefixes(["cam1"], ["onset"]) == ["action.cam1.onset."]
    assert topic_prefixes([], ["status"]) == ["status."]
    with pytest.raises(ValueError):
        topic_prefixes([], ["bogus"])


def test_label_and_stream_filters_are_applied_client_side():
    msg = {"type": "onset", "stream": "cam1", "label": "wave"}
    assert matches(msg, streams=["cam1"], labels=["wave"], types=[])
    assert not matches(msg, streams=["cam2"], labels=[], types=[])
    assert not matches(msg, streams=[], labels=["jump"], types=[])
    assert matches({"type": "heartbeat", "stream": None}, streams=["cam1"], labels=["x"], types=[])
