"""The SQLite event store: rows from the published payloads, queries, refused files, and a
failing disk that neither blocks the detector nor loses what it kept."""

import json
import sqlite3

import pytest

from engine.cli.events import event_line
from engine.metrics import Metrics
from engine.store.events import EventStore, StoreConfig
from engine.store.query import parse_time, query_events
from engine.store.schema import SCHEMA_VERSION, StoreError, open_database
from engine.wire.events import ActionEvent, StreamStatus, encode
from tests.conftest import wait_until


def onset(event_id, stream="cam1", label="wave", start_s=1.0, score=0.7, wall=1000.0):
    return ActionEvent(
        "onset", event_id, stream, label, score, start_s, wall + start_s, start_s + 0.4,
        wall + start_s + 0.4,
    )  # fmt: skip


def offset(event_id, stream="cam1", label="wave", start_s=1.0, end_s=3.0, score=0.9, wall=1000.0):
    return ActionEvent(
        "offset", event_id, stream, label, score, start_s, wall + start_s, end_s + 0.3,
        wall + end_s + 0.3, end_s, wall + end_s, "ended",
    )  # fmt: skip


def payload(message, seq, wall_s=2000.0):
    return encode(message, run_id="r1", seq=seq, wall_s=wall_s)[1]


def started(tmp_path, **kw) -> EventStore:
    config = StoreConfig(path=str(tmp_path / "ev" / "events.db"), commit_s=0.05, **kw)
    store = EventStore(config, run_id="r1", model="demo.pt", streams=["cam1"], metrics=Metrics())
    store.start()
    return store


def rows(path) -> list[dict]:
    conn = open_database(path, read_only=True)
    try:
        return list(reversed(query_events(conn, limit=-1)))
    finally:
        conn.close()


def test_an_onset_and_its_offset_make_one_row_with_both_halves(tmp_path):
    store = started(tmp_path)
    store.record(payload(StreamStatus("cam1", "connected"), 0))
    store.record(payload(onset("r1-cam1-1"), 1, wall_s=2001.0))
    store.record(payload(offset("r1-cam1-1"), 2, wall_s=2003.5))
    store.record(payload(onset("r1-cam1-2", label="jump", start_s=5.0), 3))
    store.close()
    first, second = rows(store.path)
    sent_onset = json.loads(payload(onset("r1-cam1-1"), 1, wall_s=2001.0))
    sent_offset = json.loads(payload(offset("r1-cam1-1"), 2, wall_s=2003.5))
    assert first["event_id"] == "r1-cam1-1" and first["run_id"] == "r1"
    assert first["onset_score"] == sent_onset["score"] and first["score"] == sent_offset["score"]
    assert (first["start_s"], first["end_s"]) == (sent_offset["start_s"], sent_offset["end_s"])
    assert first["onset_frame_s"] == sent_onset["frame_s"]
    assert first["offset_frame_wall_s"] == sent_offset["frame_wall_s"]
    assert (first["onset_seq"], first["offset_seq"]) == (1, 2)
    assert (first["onset_wall_s"], first["offset_wall_s"]) == (2001.0, 2003.5)
    assert first["reason"] == "ended" and first["model"] == "demo.pt" and first["late"] is False
    assert second["label"] == "jump" and second["end_s"] is None  # still open
    conn = sqlite3.connect(store.path)
    assert conn.execute("SELECT stream, state, seq FROM statuses").fetchall() == [
        ("cam1", "connected", 0)
    ]
    assert conn.execute("SELECT run_id, model FROM runs").fetchall() == [("r1", "demo.pt")]
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()
    assert store.written == 4 and store.dropped == 0


def test_a_batch_is_committed_within_commit_s_while_the_store_stays_open(tmp_path):
    store = started(tmp_path)
    try:
        store.record(payload(onset("r1-cam1-1"), 0))
        wait_until(lambda: len(rows(store.path)) == 1, "the onset committed", timeout_s=10)
        assert rows(store.path)[0]["event_id"] == "r1-cam1-1" and store.written == 1
    finally:
        store.close()


def test_queries_filter_by_stream_label_time_and_open_and_page_newest_first(tmp_path):
    store = started(tmp_path)
    for i, (stream, label, start) in enumerate(
        [("cam1", "wave", 1.0), ("cam2", "wave", 2.0), ("cam1", "jump", 3.0), ("cam1", "wave", 4.0)]
    ):
        store.record(payload(onset(f"e{i}", stream, label, start), i))
    store.record(payload(offset("e0"), 9))
    store.close()
    conn = open_database(store.path, read_only=True)

    def ids(**kw):
        return [r["event_id"] for r in query_events(conn, **kw)]

    assert ids() == ["e3", "e2", "e1", "e0"]
    assert ids(streams=["cam1"]) == ["e3", "e2", "e0"]
    assert ids(labels=["wave"], streams=["cam1", "cam2"]) == ["e3", "e1", "e0"]
    assert ids(since_wall_s=1002.0, until_wall_s=1004.0) == ["e2", "e1"]
    assert ids(open_only=True) == ["e3", "e2", "e1"]
    assert ids(limit=2) == ["e3", "e2"] and ids(limit=2, offset=2) == ["e1", "e0"]
    row = query_events(conn, open_only=False)[-1]
    line = event_line(row)
    assert "cam1" in line and "wave" in line and "2.0 s" in line and "ended" in line
    assert not line.endswith("clip") and event_line(row | {"clip_path": "/c.mp4"}).endswith("clip")
    conn.close()


def test_a_file_that_is_not_a_store_is_refused_in_one_line(tmp_path):
    bad = tmp_path / "events.db"
    bad.write_bytes(b"this is not an sqlite database, just text" * 100)
    with pytest.raises(StoreError, match="events.db: not a usable event store") as exc:
        open_database(bad)
    assert "\n" not in str(exc.value)
    newer = tmp_path / "newer.db"
    conn = sqlite3.connect(newer)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="written by a newer actstream"):
        open_database(newer)
    with pytest.raises(StoreError, match="no such file"):
        open_database(tmp_path / "absent.db", read_only=True)


def test_a_full_database_keeps_messages_for_the_next_commit_and_never_blocks(tmp_path, caplog):
    store = started(tmp_path)
    try:
        store.record(payload(onset("first"), 0))
        wait_until(lambda: store.written == 1, "the first onset committed", timeout_s=10)
        conn = store._conn  # the writer's own connection: cap its file at its current size
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")
        for i in range(300):  # far more than the file can take now: SQLITE_FULL
            store.record(payload(onset(f"e{i}", start_s=10.0 + i, label="x" * 200), 1 + i))
        wait_until(lambda: store.errors >= 2, "commits failing on the full file", timeout_s=10)
        errors = [r for r in caplog.records if "cannot write" in r.getMessage()]
        assert len(errors) == 1  # one line for the failure, not one per retry
        assert "database or disk is full" in errors[0].getMessage()
        conn.execute("PRAGMA max_page_count = 1073741823")  # room again
        wait_until(lambda: store.written == 301, "the kept messages committed", timeout_s=10)
    finally:
        store.close()
    assert len(rows(store.path)) == 301 and store.dropped == 0


def test_times_for_queries():
    now = 1_800_000_000.0
    assert parse_time("15m", now) == now - 900
    assert parse_time("2h", now) == now - 7200
    assert parse_time("1700000000.5", now) == 1700000000.5
    assert parse_time("2026-12-01T21:00:00Z", now) == parse_time("2026-12-01T21:00:00", now)
    with pytest.raises(ValueError, match="'yesterday': not a time"):
        parse_time("yesterday", now)
