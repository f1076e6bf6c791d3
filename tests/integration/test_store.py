"""The event store and the HTTP API behind a real detector: the store holds exactly what a
real ZeroMQ subscriber received, `actstream events` and the API (health, each stream's state
with its open actions, stored actions with filters and paging, one by id, errors as JSON, the
OpenAPI document) return it; a detector killed with -9 loses at most its last batch and the
next one opens the same store; a corrupt store and an HTTP port in use are refused at
start-up in one line."""

import json
import signal
import socket
import sqlite3
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest

from tests.conftest import CMD, free_port, run_cli, scaled, wait_until
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


def receive_until_exit(sub, run: Running, limit_s: float = 180) -> list[dict]:
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


def get(port: int, path: str) -> tuple[int, object]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=scaled(5)) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def up(port: int) -> bool:
    try:
        return get(port, "/healthz")[0] == 200
    except OSError:
        return False


def test_the_store_events_and_api_hold_exactly_what_a_subscriber_received(tmp_path):
    db, port = tmp_path / "store" / "events.db", free_port()
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    run = Running(
        "--config", "configs/demo.yaml", "cam=synthetic://?seed=5&duration_s=20", "--no-metrics",
        "--zmq", endpoint, "--store", str(db), "--http-port", str(port),
    )  # fmt: skip
    try:
        sub = connect_subscriber(endpoint, timeout_s=180)  # a first start compiles
        received: list[dict] = []
        listener = threading.Thread(target=lambda: received.extend(receive_until_exit(sub, run)))
        listener.start()
        status, health = get(port, "/healthz")
        assert status == 200 and health["ok"] is True and "cam" in health["streams"]
        seen_open: list[dict] = []

        def open_action_listed() -> bool:
            (info,) = get(port, "/api/streams")[1]
            seen_open.extend(info["open_actions"])
            return info["state"] == "connected" and bool(info["open_actions"])

        run.wait_until(open_action_listed, "an open action in /api/streams")
        (info,) = get(port, "/api/streams")[1]
        assert info["stream"] == "cam" and info["frames_processed"] > 0
        assert 3.0 < info["fps"] < 20.0  # the model's 10 fps, measured over the last seconds
        first = seen_open[0]

        def stored_closed():
            code, found = get(port, f"/api/events/{first['event_id']}")
            return code == 200 and found["end_s"] is not None and found

        run.wait_until(stored_closed, "the open action stored with its offset")
        row = stored_closed()
        assert (row["label"], row["stream"]) == (first["label"], "cam")
        assert row["onset_score"] == first["score"]  # as its onset said
        listed = get(port, "/api/events?stream=cam&limit=2")[1]
        assert 1 <= len(listed) <= 2
        assert all(
            a["start_wall_s"] >= b["start_wall_s"] for a, b in zip(listed, listed[1:], strict=False)
        )
        assert get(port, "/api/events?stream=other")[1] == []
        code, body = get(port, "/api/events/no-such-id")
        assert code == 404 and "no-such-id" in body["detail"]
        assert get(port, "/api/events?since=yesterday")[0] == 400
        assert get(port, "/api/events?limit=0")[0] == 400
        document = get(port, "/openapi.json")[1]
        assert {"/api/events", "/api/events/{event_id}", "/api/streams", "/healthz"} <= set(
            document["paths"]
        )
        listener.join(scaled(180))
        sub.close()
        assert run.proc.wait(scaled(30)) == 0, run.proc.stderr.read()
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
    wait_until(lambda: not up(port), "the API gone with the detector", timeout_s=10)
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
    while len(got) < 3 and time.monotonic() < deadline:
        item = sub.receive(0.2)
        if item is not None and item[1]["type"] in ("onset", "offset"):
            got.append(item[1])
    assert len(got) >= 3, "too few events before the kill"
    settle = time.monotonic() + 2.0  # the first ones are then older than a commit
    while time.monotonic() < settle:
        item = sub.receive(0.1)
        if item is not None and item[1]["type"] in ("onset", "offset"):
            got.append(item[1])
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


def test_an_http_port_in_use_is_refused_in_one_line():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        zmq = f"tcp://127.0.0.1:{free_port()}"
        result = run_cli(
            "run", "--no-metrics", "--no-store", "--zmq", zmq, "--http-port", str(port)
        )
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("actstream: error")]
    assert len(errors) == 1 and f"HTTP API http://127.0.0.1:{port}: cannot bind" in errors[0]
    assert "Traceback" not in result.stderr
