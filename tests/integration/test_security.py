"""CURVE on the event socket (`actstream keys`, an authorised subscriber gets events, others
get nothing), and what binds where by default."""

import os
import re
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest

from engine.config import load_config
from engine.wire.publisher import Publisher
from engine.wire.security import CurveServer, KeyFileError, generate_keypair
from engine.wire.subscriber import Subscriber
from tests.conftest import CMD, free_port, run_cli, scaled, wait_until

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def keys(tmp_path):
    made = {
        name: generate_keypair(tmp_path / name, name) for name in ("detector", "sub1", "intruder")
    }
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    shutil.copy(made["sub1"][0], allowed)
    return made, allowed


def heard(sub: Subscriber, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if sub.receive(0.1) is not None:
            return True
    return False


def test_only_authorised_subscribers_receive_curve_encrypted_events(keys):
    made, allowed = keys
    publisher = Publisher(
        "tcp://127.0.0.1:*",
        run_id="c",
        heartbeat_s=0.05,
        curve=CurveServer(made["detector"][1], allowed),
    )
    endpoint = publisher.start()
    server_public = made["detector"][0]
    good = Subscriber(endpoint, curve_server_key=server_public, curve_client_key=made["sub1"][1])
    intruder = Subscriber(
        endpoint, curve_server_key=server_public, curve_client_key=made["intruder"][1]
    )
    plain = Subscriber(endpoint)
    try:
        assert heard(good, 10.0)
        assert not heard(intruder, 1.5)  # its key is not in the allowed directory
        assert not heard(plain, 0.5)  # no CURVE at all
    finally:
        for s in (good, intruder, plain):
            s.close()
        publisher.close()


def test_without_a_client_list_any_holder_of_the_detector_key_may_subscribe(keys):
    made, _ = keys
    publisher = Publisher(
        "tcp://127.0.0.1:*", run_id="c", heartbeat_s=0.05, curve=CurveServer(made["detector"][1])
    )
    endpoint = publisher.start()
    anyone = Subscriber(
        endpoint, curve_server_key=made["detector"][0], curve_client_key=made["intruder"][1]
    )
    plain = Subscriber(endpoint)
    try:
        assert heard(anyone, 10.0)
        assert not heard(plain, 1.0)
    finally:
        anyone.close()
        plain.close()
        publisher.close()


def test_bad_key_files_are_refused_by_name(keys, tmp_path):
    made, _ = keys
    with pytest.raises(KeyFileError, match="no such key file"):
        CurveServer(tmp_path / "missing.key_secret")
    with pytest.raises(KeyFileError, match=r"not a secret key file"):
        CurveServer(made["detector"][0])  # the public half only
    with pytest.raises(KeyFileError, match="no client public keys"):
        CurveServer(made["detector"][1], tmp_path / "empty")
    with pytest.raises(KeyFileError, match="needs both"):
        Subscriber("tcp://127.0.0.1:1", curve_server_key=made["detector"][0])
    with pytest.raises(KeyFileError, match="exists"):
        generate_keypair(tmp_path / "sub1", "sub1")


def test_keys_run_and_subscribe_commands_with_curve(tmp_path):
    result = run_cli("keys", str(tmp_path / "k"), "--name", "detector")
    assert result.returncode == 0, result.stderr
    assert run_cli("keys", str(tmp_path / "k"), "--name", "viewer").returncode == 0
    secret = tmp_path / "k" / "detector.key_secret"
    assert stat.S_IMODE(os.stat(secret).st_mode) == 0o600
    again = run_cli("keys", str(tmp_path / "k"), "--name", "detector")
    assert again.returncode == 2 and again.stderr.count("\n") == 1 and "exists" in again.stderr

    endpoint = f"tcp://127.0.0.1:{free_port()}"
    clients = tmp_path / "clients"
    clients.mkdir()
    shutil.copy(tmp_path / "k" / "viewer.key", clients)
    detector = subprocess.Popen(
        [
            *CMD,
            "run",
            "synthetic://cam",
            "--zmq",
            endpoint,
            "--no-metrics",
            "--quiet",
            "--backend",
            "torch",
        ]
        + ["--curve-secret-key", str(secret), "--curve-clients", str(clients)]
        + ["--duration-s", f"{scaled(8):g}"],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        sub = run_cli(
            "subscribe",
            "--zmq",
            endpoint,
            "--count",
            "3",
            "--timeout-s",
            f"{scaled(6):g}",  # the detector may still be importing torch
            "--curve-server-key",
            str(tmp_path / "k" / "detector.key"),
            "--curve-client-key",
            str(tmp_path / "k" / "viewer.key_secret"),
        )
        assert sub.returncode == 0, sub.stderr
        assert len(sub.stdout.splitlines()) == 3
        plain = run_cli("subscribe", "--zmq", endpoint, "--count", "1", "--timeout-s", "1.5")
        assert plain.returncode == 1 and plain.stdout == ""  # nothing, and it says why
        assert "nothing from" in plain.stderr and "--curve-server-key" in plain.stderr
    finally:
        detector.wait(scaled(30))
    assert detector.returncode == 0, detector.stderr


def test_missing_curve_key_is_a_one_line_start_up_error(tmp_path):
    result = run_cli(
        "run", "--no-metrics", "--backend", "torch", "--curve-secret-key", str(tmp_path / "x")
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no such key file" in lines[0], lines


def test_event_socket_and_metrics_bind_to_loopback_by_default():
    config = load_config(None)
    assert config.publisher.endpoint.startswith("tcp://127.0.0.1:")
    assert config.metrics.host == "127.0.0.1"


def test_rtsp_credentials_never_reach_logs_metrics_or_events(rtsp_server):
    import urllib.request

    server = rtsp_server("--source", "testsrc", "--user", "viewer", "--password", "s3cret")
    url = server.url.replace("rtsp://", "rtsp://viewer:s3cret@")
    metrics_port = free_port()
    run = subprocess.Popen(
        [
            *CMD,
            "--log-level",
            "debug",
            "run",
            url,
            f"bad=rtsp://viewer:s3cret@127.0.0.1:{free_port()}/x",
        ]
        + ["--zmq", f"tcp://127.0.0.1:{free_port()}", "--metrics-port", str(metrics_port)]
        + ["--backend", "torch", "--duration-s", f"{scaled(5):g}"]
        + ["--set", "stream.retry_first_open=true"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def processing() -> str | None:
        """The metrics text once the camera's frames go through the model."""
        try:
            text = urllib.request.urlopen(
                f"http://127.0.0.1:{metrics_port}/metrics", timeout=scaled(5)
            )
            text = text.read().decode()
        except OSError:
            return None  # not serving yet
        camera = re.search(r'actstream_frames_processed_total\{stream="s127-0-0-1"\} (\S+)', text)
        return text if camera and float(camera.group(1)) > 0 else None

    metrics = wait_until(processing, "frames through the model", timeout_s=30)
    out, err = run.communicate(timeout=scaled(30))
    assert run.returncode == 0, err
    assert "status.bad.reconnecting" in out and "heartbeat" in out  # both streams were reported
    assert "actstream_frames_processed_total" in metrics
    for text in (out, err, metrics):
        assert "s3cret" not in text
    assert "rtsp://***@" in err  # the URL is shown, redacted


def test_keys_stay_out_of_git_working_trees_and_default_to_the_users_config(tmp_path):
    repo = tmp_path / "project"
    (repo / ".git").mkdir(parents=True)  # a working tree, as `git init` leaves it
    refused = run_cli("keys", str(repo / "keys"), "--name", "detector")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert "inside the git working tree" in refused.stderr and "--force" in refused.stderr
    assert not (repo / "keys").exists()
    forced = run_cli("keys", str(repo / "keys"), "--name", "detector", "--force")
    assert forced.returncode == 0 and (repo / "keys" / "detector.key_secret").is_file()
    # no DIR: ~/.config/actstream/keys (XDG_CONFIG_HOME when set), created
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    default = subprocess.run(
        [*CMD, "keys", "--name", "viewer"],
        capture_output=True,
        text=True,
        timeout=scaled(60),
        cwd=ROOT,
        env=env,
    )
    assert default.returncode == 0, default.stderr
    assert (tmp_path / "cfg" / "actstream" / "keys" / "viewer.key_secret").is_file()
    # the README's example folders are git-ignored in this project
    ignored = (ROOT / ".gitignore").read_text().split()
    assert {"/keys/", "/allowed/", "*.key_secret"} <= set(ignored)


def test_subscribe_with_no_detector_says_so_and_exits_1():
    result = run_cli("subscribe", "--zmq", f"tcp://127.0.0.1:{free_port()}", "--timeout-s", "1")
    assert result.returncode == 1 and result.stdout == ""
    assert "is a detector running there?" in result.stderr and "Traceback" not in result.stderr
