"""The `actstream` command as a user runs it: start-up mistakes give one clear line naming
the input and a non-zero exit; `subscribe` receives what `run` publishes; shutdown is clean."""

import json
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import zmq

from tests.conftest import CMD, free_port, run_cli, scaled
from tests.integration.helpers import Running

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
# The torch backend starts at once (auto picks onnxruntime, compiled at a config's first start).
SMALL = [
    "--set",
    "model.head.window_frames=16",
    "--set",
    "model.head.num_levels=3",
    "--backend",
    "torch",
]


def one_error_line(result):
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("actstream: error: ")
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, clip_mp4):
    d = tmp_path_factory.mktemp("bad")
    (d / "garbage.mp4").write_bytes(bytes(range(256)) * 200)
    (d / "truncated.mp4").write_bytes(clip_mp4.read_bytes()[:4000])
    (d / "bad.yaml").write_text("model:\n  temporal:\n    lookbak: 3\n")
    return d


def test_missing_file(tmp_path):
    line = one_error_line(run_cli("run", str(tmp_path / "missing.mp4"), "--no-metrics"))
    assert "missing.mp4: no such file" in line


def test_garbage_file(bad_files):
    line = one_error_line(
        run_cli(
            "run",
            str(bad_files / "garbage.mp4"),
            "--no-metrics",
            "--zmq",
            f"tcp://127.0.0.1:{free_port()}",
        )
    )
    assert "garbage.mp4: cannot read it as video" in line


def test_truncated_mp4(bad_files):
    line = one_error_line(
        run_cli(
            "run",
            str(bad_files / "truncated.mp4"),
            "--no-metrics",
            "--zmq",
            f"tcp://127.0.0.1:{free_port()}",
        )
    )
    assert "truncated.mp4: cannot read it as video" in line


def test_unreachable_rtsp_url_is_bounded_by_the_timeout():
    with socket.socket() as silent:  # accepts, never answers: only the timeout ends the wait
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"rtsp://127.0.0.1:{silent.getsockname()[1]}/cam"
        t0 = time.monotonic()
        result = run_cli(
            "run",
            url,
            "--no-metrics",
            "--set",
            "stream.timeout_s=1",
            "--zmq",
            f"tcp://127.0.0.1:{free_port()}",
        )
        elapsed = time.monotonic() - t0
    line = one_error_line(result)
    assert url in line and "cannot connect" in line
    assert elapsed < 20


def test_unknown_config_key(bad_files):
    line = one_error_line(run_cli("run", "--config", str(bad_files / "bad.yaml")))
    assert "bad.yaml: model.temporal.lookbak: unknown key; known:" in line


def test_bad_set_value():
    line = one_error_line(run_cli("run", "--set", "stream.timeout_s=soon"))
    assert "stream.timeout_s: expected a number, got str 'soon'" in line


def test_wrong_url_scheme():
    line = one_error_line(run_cli("run", "rtspx://cam/1"))
    assert "rtspx://cam/1: unsupported URL scheme" in line


def test_zeromq_port_already_in_use():
    ctx = zmq.Context.instance()
    holder = ctx.socket(zmq.PUB)
    port = holder.bind_to_random_port("tcp://127.0.0.1")
    try:
        line = one_error_line(run_cli("run", "--no-metrics", "--zmq", f"tcp://127.0.0.1:{port}"))
    finally:
        holder.close(0)
    assert f"tcp://127.0.0.1:{port}: cannot bind" in line and "--zmq" in line


def test_metrics_port_already_in_use():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        line = one_error_line(
            run_cli("run", "--metrics-port", str(port), "--zmq", f"tcp://127.0.0.1:{free_port()}")
        )
    assert f"http://127.0.0.1:{port}/metrics: cannot bind" in line


def test_corrupt_weights(tmp_path):
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"not a checkpoint" * 10)
    line = one_error_line(run_cli("run", "--weights", str(bad), "--no-metrics"))
    assert "model.pt: not a readable checkpoint" in line


def test_subscribe_receives_what_run_prints_and_sigint_exits_cleanly():
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    sub = subprocess.Popen(
        [*CMD, "subscribe", "--zmq", endpoint, "--timeout-s", f"{scaled(8):g}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # the subscriber connects before anything is published: its socket is up once it
    # imported what it needs (it would retry the connection until the detector binds)
    run = Running("--zmq", endpoint, "--metrics-port", "0", *SMALL)
    run.wait_until(
        lambda: "status.demo.connected" in run.topics() and run.topics().count("heartbeat") >= 3,
        "connected, three heartbeats",
    )
    code, run_err, stop_s = run.stop(signal.SIGINT)
    sub_out, _ = sub.communicate(timeout=scaled(20))
    assert code == 0, run_err
    assert stop_s < 5.0
    run_out = "\n".join(run.lines)
    published = [line for line in run_out.splitlines() if line]
    lines = [line for line in sub_out.splitlines() if line]
    snapshot = [line for line in lines if '"snapshot":true' in line]
    received = [line for line in lines if line not in snapshot]
    assert len(published) >= 5
    topics = [line.split(" ", 1)[0] for line in published]
    assert "status.demo.connected" in topics and "heartbeat" in topics
    assert topics[-1] == "status.demo.stopped"
    # The subscriber connected before the detector bound (ZeroMQ's slow joiner): whatever
    # was published before its subscription arrived, the snapshot told it the stream's state,
    # and from its first live message on it got every one.
    assert snapshot and snapshot[0].startswith("status.demo.")
    first = published.index(received[0])
    assert received == published[first:]
    known = {line.split(" ", 1)[0] for line in snapshot + received}
    assert "status.demo.connected" in known
    assert json.loads(received[-1].split(" ", 1)[1])["detail"] == "detector shut down"


def test_bundled_model_detects_actions_of_the_synthetic_stream():
    # `make run` runs exactly this config; a finite scene played fast makes it deterministic.
    result = run_cli(
        "run",
        "--config",
        "configs/demo.yaml",
        "synthetic://?seed=5&duration_s=40",
        "--fast",
        "--no-metrics",
        "--zmq",
        f"tcp://127.0.0.1:{free_port()}",
        timeout=scaled(120),
    )
    assert result.returncode == 0, result.stderr
    messages = [json.loads(line.split(" ", 1)[1]) for line in result.stdout.splitlines() if line]
    onsets = [m for m in messages if m["type"] == "onset"]
    offsets = {m["event_id"]: m for m in messages if m["type"] == "offset"}
    assert len(onsets) >= 3
    assert all(m["event_id"] in offsets for m in onsets)  # every action is closed
    # the stream's last status is `ended`; only clips (written after) and heartbeats follow
    last = [m for m in messages if m["type"] not in ("clip", "heartbeat")][-1]
    assert last["type"] == "status" and last["state"] == "ended"


def test_sigterm_with_a_source_that_never_comes_back_exits_0_within_5_s():
    """A camera that is down for good is reported, retried with capped back-off and never
    holds up shutdown; the healthy stream keeps flowing meanwhile."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    dead = f"rtsp://127.0.0.1:{free_port()}/gone"  # nothing listens there
    run = Running(
        f"dead={dead}",
        "ok=synthetic://",
        "--zmq",
        endpoint,
        "--no-metrics",
        *["--set", "stream.retry_first_open=true", "--set", "stream.reconnect_max_s=0.5"],
        *SMALL,
    )
    run.wait_until(
        lambda: (
            run.topics().count("status.dead.reconnecting") >= 3
            and "status.ok.connected" in run.topics()
            and any(
                '"ok":"connected"' in line for line in run.lines if line.startswith("heartbeat")
            )
        ),
        "retrying the dead camera three times, the other one flowing",
    )
    code, err, elapsed = run.stop(signal.SIGTERM)
    out = "\n".join(run.lines)
    assert code == 0, err
    assert elapsed < 5.0
    topics = [line.split(" ", 1)[0] for line in out.splitlines() if line]
    dead_states = [t for t in topics if t.startswith("status.dead.")]
    assert dead_states.count("status.dead.reconnecting") >= 3  # retried, and retried again
    assert "status.dead.connected" not in dead_states
    assert "status.ok.connected" in topics
    heartbeats = [
        json.loads(line.split(" ", 1)[1])
        for line in out.splitlines()
        if line.startswith("heartbeat ")
    ]
    assert heartbeats and heartbeats[-1]["streams"]["ok"] == "connected"
    assert "password" not in err
