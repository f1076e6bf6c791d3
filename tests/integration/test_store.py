"""The event store behind a real detector: it holds exactly what a real ZeroMQ subscriber
received, `actstream events` returns it, a detector killed with -9 loses at most its last
batch and the next one opens the same store, and a corrupt store is refused at start-up."""

import json
import signal
import sqlite3
import subprocess
import time

import pytest

from tests.conftest import CMD, free_port, run_cli, scaled
from tests.integration.helpers import Running, connect_subscriber

pytestmark = pytest.mark.integration

ONSET_FIELDS = {  # store column: the onset message's field
    "onset_score": "score",
    "onset_frame_s": "frame_s",
    "onset_frame_wall_s": "frame_wall_s",
    "onset_wall_s": "wall_s",
    "onset_seq": "seq",
    "run_id": "run_id",
    "stream": "stream",
    "label": "label",
}
OFFSET_FIELDS = {
    "score": "score",
    "start_s": "start_s",
    "start_wall_s": "start_wall_s",
    "end_s": "end_s",
    "end_wall_s": "end_wall_s",
    "reason": "reason",
    "late": "late",
    "offset_frame_s": "frame_s",
    "offset_frame_wall_s": "frame_wall_s",
    "offset_wall_s": "wall_s",
    "offset_seq": "seq",
}


def receive_until_exit(sub, run: Running, limit_s: float) -> list[dict]:
    """Every onset and offset the subscriber gets until the detector has exited (and has
    had time to flush)."""
    got, deadline, exited_at = [], time.monotonic() + scaled(limit_s), None
    while time.monotonic() < deadline:
        item = sub.receive(0.2)
        if item is not None and item[1]["type"] in ("onset", "offset"):
            got.append(item[1])
        if exited_at is None and run.proc.poll() is not None:
            exited_at = time.monotonic()
        if exited_at is not None and item is None and time.monotonic() - exited_at > 1.0:
            break
    return got


def stored(db) -> dict[str, dict]:
    out = run_cli("events", "--store", str(db), "--json", "--limit", "0", timeout=scaled(60))
    assert out.returncode == 0, out.stderr
    return {r["event_id"]: r for r in map(json.loads, out.stdout.splitlines())}


def assert_row_holds(row: dict, message: dict) -> None:
    fields = ONSET_FIELDS if message["type"] == "onset" else OFFSET_FIELDS
    for column, key in fields.items():
        assert row[column] == message[key], (column, row, message)


def test_the_store_holds_exactly_what_a_subscriber_received(tmp_path):
    db = tmp_path / "store" / "events.db"
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    run = Running(
        "--config", "configs/demo.yaml", "synthetic://?seed=5&duration_s=30", "--no-metrics",
        "--zmq", endpoint, "--store", str(db),
    )  # fmt: skip
    sub = connect_subscriber(endpoint, timeout_s=60)
    received = receive_until_exit(sub, run, limit_s=120)
    sub.close()
    assert run.proc.wait(scaled(30)) == 0, run.proc.stderr.read()
    published = [
        json.loads(line.split(" ", 1)[1]) for line in run.lines if line.startswith("action.")
    ]
    onsets = [m for m in received if m["type"] == "onset"]
    assert len(onsets) >= 2 and len(received) > len(onsets)
    rows = stored(db)
    # every action published is stored, nothing else; the subscriber's copy is the same
    assert set(rows) == {m["event_id"] for m in published}
    for message in published + received:
        assert_row_holds(rows[message["event_id"]], message)
    assert all(r["end_s"] is not None for r in rows.values())  # the stream ended: all closed
    listed = run_cli("events", "--store", str(db), "--label", onsets[0]["label"])
    assert listed.returncode == 0 and onsets[0]["event_id"] in listed.stdout


def test_a_killed_detector_loses_at_most_its_last_batch_and_the_next_opens_the_store(tmp_path):
    db = tmp_path / "events.db"
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    args = ["--config", "configs/demo.yaml", "--no-metrics", "--quiet", "--store", str(db)]
    run = Running(*args, "--zmq", endpoint, "synthetic://?seed=5")
    sub = connect_subscriber(endpoint, timeout_s=60)
    got: list[dict] = []
    deadline = time.monotonic() + scaled(120)
    while len(got) < 5 and time.monotonic() < deadline:
        item = sub.receive(0.2)
        if item is not None and item[1]["type"] in ("onset", "offset"):
            got.append(item[1])
    assert len(got) >= 5, "too few events before the kill"
    killed_at = time.time()
    run.proc.send_signal(signal.SIGKILL)
    run.proc.wait(scaled(10))
    sub.close()
    rows = stored(db)
    commit_s = 1.0  # store.commit_s's default: what was sent this long before is committed
    settled = [m for m in got if m["wall_s"] < killed_at - commit_s - 0.5]
    assert settled, "nothing old enough to be committed"
    for message in settled:
        assert message["event_id"] in rows
        assert_row_holds(rows[message["event_id"]], message)
    again = subprocess.run(
        [*CMD, "run", *args, "--zmq", f"tcp://127.0.0.1:{free_port()}", "--duration-s", "3"],
        capture_output=True,
        text=True,
        timeout=scaled(120),
    )
    assert again.returncode == 0, again.stderr
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 2
    conn.close()


def test_a_corrupt_store_is_refused_at_start_up_in_one_line(tmp_path):
    db = tmp_path / "events.db"
    db.write_bytes(b"not a database " * 500)
    result = run_cli("run", "--store", str(db), "--no-metrics", "--duration-s", "1")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("actstream: error")]
    assert len(errors) == 1 and "events.db: not a usable event store" in errors[0]
    assert "Traceback" not in result.stderr
