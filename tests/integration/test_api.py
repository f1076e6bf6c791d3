"""The detector's HTTP API, scraped from a real detector: health, each stream's state with its
open actions, the stored actions with filters and paging, one action by id, errors as JSON,
the OpenAPI document; a port in use is refused at start-up in one line."""

import json
import socket
import urllib.error
import urllib.request

import pytest

from tests.conftest import free_port, run_cli, scaled, wait_until
from tests.integration.helpers import Running

pytestmark = pytest.mark.integration


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


def test_the_api_serves_health_streams_and_stored_actions(tmp_path):
    port = free_port()
    run = Running(
        "--config", "configs/demo.yaml", "cam=synthetic://?seed=5&duration_s=40", "--no-metrics",
        "--zmq", f"tcp://127.0.0.1:{free_port()}", "--store", str(tmp_path / "events.db"),
        "--http-port", str(port),
    )  # fmt: skip
    try:
        run.wait_until(lambda: up(port), "the API up", timeout_s=180)  # a first start compiles
        status, health = get(port, "/healthz")
        assert health["ok"] is True and "cam" in health["streams"]

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
        assert f'"event_id":"{first["event_id"]}"' in "\n".join(run.lines)  # it was published

        def stored_closed():
            code, found = get(port, f"/api/events/{first['event_id']}")
            return code == 200 and found["end_s"] is not None and found

        run.wait_until(stored_closed, "the open action stored with its offset")
        row = stored_closed()
        assert row["label"] == first["label"] and row["stream"] == "cam"
        assert row["onset_score"] == first["score"]

        listed = get(port, "/api/events?stream=cam&limit=2")[1]
        assert 1 <= len(listed) <= 2
        assert all(
            a["start_wall_s"] >= b["start_wall_s"] for a, b in zip(listed, listed[1:], strict=False)
        )
        assert get(port, "/api/events?stream=other")[1] == []
        code, body = get(port, "/api/events/no-such-id")
        assert code == 404 and "no-such-id" in body["detail"]
        assert get(port, "/api/events?since=yesterday")[0] == 422
        assert get(port, "/api/events?limit=0")[0] == 422
        document = get(port, "/openapi.json")[1]
        assert {"/api/events", "/api/events/{event_id}", "/api/streams", "/healthz"} <= set(
            document["paths"]
        )
        assert run.proc.wait(scaled(120)) == 0  # the scene ends: the detector exits
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
    wait_until(lambda: not up(port), "the API gone with the detector", timeout_s=10)


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
