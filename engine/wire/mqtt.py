"""MQTT: every onset, offset, stream status change and finished clip, as the JSON the ZeroMQ
socket sends, on `<prefix>/<stream>/<type>` (paho-mqtt; home-automation and IoT stacks speak it
natively).

The detector never waits on the broker: paho's network thread sends, a publish only queues
(bounded by `queue_max`; beyond it messages are dropped and counted), and a lost connection
is retried with back-off (`reconnect_min_s` doubling to `reconnect_max_s`) while QoS 1 and 2
messages wait in the queue and go out after the reconnection. `<prefix>/available` is
`online` while the detector is connected and `offline` otherwise (the will, retained). With
`ha_discovery`, Home Assistant's MQTT discovery gets one sensor per stream whose state is the
stream's current action (`<prefix>/<stream>/action`, retained: a label or `idle`).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.parse
from dataclasses import dataclass

from engine.loader import check_positive
from engine.wire.events import ActionEvent, ClipReady, StreamStatus

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class MqttConfig:
    """Attributes:
    url: broker, mqtt://[USER:PASSWORD@]HOST[:PORT] (None: no MQTT).
    qos: 0, 1 (default: at least once) or 2.
    topic_prefix: first level of every topic.
    client_id: the MQTT client id (None: actstream-RUN_ID).
    keepalive_s: MQTT keep-alive.
    reconnect_min_s, reconnect_max_s: back-off between reconnection attempts.
    queue_max: messages waiting for the broker before new ones are dropped.
    ha_discovery: announce a Home Assistant sensor per stream (its current action).
    """

    url: str | None = None
    qos: int = 1
    topic_prefix: str = "actstream"
    client_id: str | None = None
    keepalive_s: int = 30
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 10.0
    queue_max: int = 10000
    ha_discovery: bool = False

    def __post_init__(self) -> None:
        if self.qos not in (0, 1, 2):
            raise ValueError(f"qos must be 0, 1 or 2, got {self.qos}")
        check_positive(self, "keepalive_s", "reconnect_min_s", "reconnect_max_s", "queue_max")
        if not self.topic_prefix or any(c in self.topic_prefix for c in "#+"):
            raise ValueError(f"topic_prefix must be a plain topic, got {self.topic_prefix!r}")
        if self.url is not None:
            broker_address(self.url)  # refuses a bad URL with the config's key path


class MqttError(ValueError):
    """The MQTT settings cannot be used (one line)."""


def broker_address(url: str) -> tuple[str, int, str | None, str | None]:
    """mqtt://[user:password@]host[:port] → (host, port, user, password)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "mqtt" or not parts.hostname:
        raise MqttError(f"url {url!r}: give the broker as mqtt://HOST[:PORT]")
    try:
        port = parts.port or 1883
    except ValueError:
        raise MqttError(f"url {url!r}: the port is not a number in [1, 65535]") from None
    return parts.hostname, port, parts.username, parts.password


class MqttPublisher:
    """Publishes the detector's messages to an MQTT broker (see the module doc).

    Args:
        config: the mqtt section (its `url` set).
        run_id: this run's id (the default client id).
        streams: the stream ids (for discovery).
        metrics: counts drops in `actstream_messages_dropped_total` (None: not counted).
    """

    def __init__(self, config: MqttConfig, *, run_id: str, streams=(), metrics=None) -> None:
        import paho.mqtt.client as mqtt

        assert config.url, "MQTT needs mqtt.url"
        self.config, self.streams, self.metrics = config, list(streams), metrics
        self.host, self.port, user, password = broker_address(config.url)
        self.shown = f"mqtt://{self.host}:{self.port}"  # never the credentials
        self.prefix = config.topic_prefix
        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=config.client_id or f"actstream-{run_id}",
            clean_session=True,
        )
        if user:
            self._client.username_pw_set(user, password)
        self._client.will_set(f"{self.prefix}/available", "offline", qos=1, retain=True)
        self._client.reconnect_delay_set(
            min_delay=config.reconnect_min_s, max_delay=config.reconnect_max_s
        )
        self._client.max_queued_messages_set(config.queue_max)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._open: dict[str, dict[str, str]] = {s: {} for s in self.streams}  # id → label
        self._lock = threading.Lock()
        self.connected = threading.Event()
        self.dropped = 0
        # message ids of QoS >= 1 sends the broker has not acknowledged yet (and acks that came
        # before their send was noted), guarded by their lock
        self._unacked: set[int] = set()
        self._early: set[int] = set()
        self._acks = threading.Lock()
        self._closing = False

    def start(self) -> None:
        """Connects in the background (an unreachable broker is retried, never fatal)."""
        self._client.connect_async(self.host, self.port, keepalive=self.config.keepalive_s)
        self._client.loop_start()

    def record(self, payload: bytes, message) -> None:
        """Queues one published message; never blocks."""
        if isinstance(message, ActionEvent):
            kind = message.type
        elif isinstance(message, StreamStatus):
            kind = "status"
        elif isinstance(message, ClipReady):
            kind = "clip"
        else:
            return  # heartbeats: `<prefix>/available` says the detector is there
        stream = message.stream
        self._send(f"{self.prefix}/{stream}/{kind}", payload, retain=False)
        if self.config.ha_discovery and kind in ("onset", "offset"):
            with self._lock:
                actions = self._open.setdefault(stream, {})
                if kind == "onset":
                    actions[message.event_id] = message.label
                else:
                    actions.pop(message.event_id, None)
                state = next(reversed(actions.values()), "idle")
            self._send(f"{self.prefix}/{stream}/action", state.encode(), retain=True)

    def close(self, timeout_s: float = 5.0) -> None:
        """Delivers what is queued (reconnecting if need be) within `timeout_s`, says
        `offline`, disconnects; what could not be delivered by then is logged in one line."""
        deadline = time.monotonic() + timeout_s
        while self._unacknowledged() and time.monotonic() < deadline:
            time.sleep(0.02)  # paho's thread reconnects and sends meanwhile
        left = self._unacknowledged()
        if left:
            logger.warning(
                "MQTT: %d message(s) not acknowledged by %s within %.0f s of shutdown",
                left,
                self.shown,
                timeout_s,
            )
        if self.connected.is_set():
            self._publish(f"{self.prefix}/available", b"offline", qos=1, retain=True)
            while self._unacknowledged() and self.connected.is_set():
                if time.monotonic() > deadline + 1.0:
                    break
                time.sleep(0.02)
        self._closing = True
        self._client.disconnect()
        self._client.loop_stop()

    def _unacknowledged(self) -> int:
        with self._acks:
            return len(self._unacked)

    def _publish(self, topic: str, payload: bytes, *, qos: int, retain: bool):
        """Publishes and notes a QoS >= 1 send until the broker acknowledges it (paho keeps
        such a message while disconnected and sends it after the reconnection)."""
        import paho.mqtt.client as mqtt

        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if qos > 0 and info.rc in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            with self._acks:
                if info.mid in self._early:
                    self._early.discard(info.mid)
                else:
                    self._unacked.add(info.mid)
        return info

    def _send(self, topic: str, payload: bytes, *, retain: bool) -> None:
        import paho.mqtt.client as mqtt

        info = self._publish(topic, payload, qos=self.config.qos, retain=retain)
        if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
            self.dropped += 1
            if self.metrics is not None:
                self.metrics.messages_dropped.inc()

    # ---- paho's network thread ----------------------------------------------------------------
    def _on_connect(self, client, _userdata, _flags, reason, _properties) -> None:
        if reason.is_failure:
            logger.warning("MQTT broker %s refused the connection: %s", self.shown, reason)
            return
        logger.info("MQTT: connected to %s", self.shown)
        self._publish(f"{self.prefix}/available", b"online", qos=1, retain=True)
        if self.config.ha_discovery:
            for stream in self.streams:
                self._publish(
                    f"homeassistant/sensor/{self.prefix}_{stream}/action/config",
                    json.dumps(
                        {
                            "name": f"{stream} action",
                            "unique_id": f"{self.prefix}_{stream}_action",
                            "state_topic": f"{self.prefix}/{stream}/action",
                            "availability_topic": f"{self.prefix}/available",
                            "icon": "mdi:motion-sensor",
                        }
                    ).encode(),
                    qos=1,
                    retain=True,
                )
        self.connected.set()

    def _on_publish(self, _client, _userdata, mid, _reason, _properties) -> None:
        with self._acks:
            if mid in self._unacked:
                self._unacked.discard(mid)
            else:
                self._early.add(mid)  # acknowledged before `_publish` noted it

    def _on_disconnect(self, _client, _userdata, _flags, reason, _properties) -> None:
        if self.connected.is_set() and not self._closing:
            logger.warning(
                "MQTT: lost %s (%s); reconnecting, messages wait in the queue", self.shown, reason
            )
        self.connected.clear()
