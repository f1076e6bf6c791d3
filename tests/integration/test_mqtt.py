"""MQTT against a real Mosquitto broker started by the test: every event the detector
publishes arrives at an MQTT subscriber, also with a broker restart in the middle (QoS 1:
nothing lost after the reconnection); the availability topic and Home Assistant discovery."""

import json
import shutil
import signal
import socket
import subprocess
import threading

import pytest

from tests.conftest import free_port, run_cli, scaled, wait_until
from tests.integration.helpers import Running

pytestmark = pytest.mark.integration

MOSQUITTO = "/usr/sbin/mosquitto"  # Debian's; /usr/sbin is not on every PATH


class Broker:
    """Mosquitto on 127.0.0.1:port with persistence in `folder` (sessions survive a
    restart, as a deployed broker's do)."""

    def __init__(self, folder, port: int) -> None:
        self.port = port
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {folder}/\nlog_dest stderr\n"
        )
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        wait_until(self.accepting, f"mosquitto on port {self.port}", timeout_s=20)

    def accepting(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, self.proc.stderr.read()
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # saves its sessions, as on a reboot
            self.proc.wait(scaled(20))


@pytest.fixture
def broker(tmp_path):
    if not shutil.which(MOSQUITTO):
        pytest.fail("mosquitto is not installed: run bash .ci/install_test_servers.sh")
    b = Broker(tmp_path, free_port())
    b.start()
    yield b
    b.stop()


class Collector:
    """An MQTT subscriber with a persistent session (QoS 1): what is published while it is
    disconnected waits for it at the broker."""

    def __init__(self, port: int) -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id="test-collector", clean_session=False
        )
        self.client.reconnect_delay_set(min_delay=0.1, max_delay=0.5)
        self.client.on_connect = lambda c, *_: c.subscribe(
            [("actstream/#", 1), ("homeassistant/#", 1)]
        )
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, _client, _userdata, msg) -> None:
        with self.lock:
            self.messages.append((msg.topic, msg.payload, bool(msg.retain)))

    def events(self) -> set[tuple[str, str]]:
        with self.lock:
            return {
                (json.loads(p)["event_id"], json.loads(p)["type"])
                for t, p, _ in self.messages
                if t.endswith(("/onset", "/offset"))
            }

    def topics(self) -> list[str]:
        with self.lock:
            return [t for t, _, _ in self.messages]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def actions(run: Running) -> int:
    return sum(line.startswith("action.") for line in list(run.lines))


def test_every_event_arrives_over_mqtt_across_a_broker_restart(broker):
    sub = Collector(broker.port)
    run = Running(
        "--config", "configs/demo.yaml", "cam=synthetic://?seed=5&duration_s=20", "--no-metrics",
        "--no-store", "--zmq", f"tcp://127.0.0.1:{free_port()}",
        "--mqtt", f"mqtt://127.0.0.1:{broker.port}", "--set", "mqtt.ha_discovery=true",
        "--set", "mqtt.reconnect_max_s=1",
    )  # fmt: skip
    try:
        run.wait_until(lambda: any("/onset" in t for t in sub.topics()), "a first onset", 180)
        broker.stop()  # the broker goes away mid-stream, and comes back on the same port
        before = actions(run)
        run.wait_until(lambda: actions(run) > before, "an event published while it is down", 60)
        broker.start()
        assert run.proc.wait(scaled(180)) == 0, run.proc.stderr.read()
        published = {
            (m["event_id"], m["type"])
            for m in (json.loads(line.split(" ", 1)[1]) for line in run.lines)
            if m["type"] in ("onset", "offset")
        }
        assert len(published) >= 4
        wait_until(lambda: published <= sub.events(), "every event at the MQTT subscriber", 60)
        topics = sub.topics()
        assert "actstream/cam/status" in topics and "actstream/available" in topics
        assert "homeassistant/sensor/actstream_cam/action/config" in topics
        assert "actstream/cam/action" in topics  # the sensor's state: a label, then idle
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
        sub.close()


def test_a_bad_broker_url_is_refused_in_one_line():
    result = run_cli("run", "--mqtt", "http://broker:1883", "--no-metrics", "--no-store")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("actstream: error")]
    assert len(errors) == 1 and "mqtt: url " in errors[0] and "mqtt://HOST[:PORT]" in errors[0]
