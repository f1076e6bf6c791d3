"""ZeroMQ publisher: one thread owns the socket, fed by a queue; it numbers messages per
stream and sends heartbeats.

The socket is an XPUB (PUB semantics for subscribers, which connect with SUB): it never
blocks the detector, and at the high-water mark ZeroMQ drops messages silently, so subscribers
detect losses from gaps in the per-stream sequence numbers. XPUB also tells the publisher of
every subscription: a subscriber that joins gets a snapshot at once (each stream's current
status and every action still open, marked `"snapshot": true`), and a message that no
subscription matched is counted as unheard, not as sent.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import zmq

from engine.loader import check_positive
from engine.metrics import Metrics
from engine.wire.events import ActionEvent, Heartbeat, Message, StreamStatus, encode
from engine.wire.security import CurveServer


@dataclass(frozen=True, kw_only=True)
class PublisherConfig:
    """Attributes:
    endpoint: ZeroMQ PUB endpoint to bind (loopback by default).
    heartbeat_s: seconds between heartbeats (None: no heartbeats).
    send_hwm: messages queued per subscriber before ZeroMQ drops (PUB never blocks).
    curve_secret_key: the detector's CURVE key pair (NAME.key_secret from actstream keys):
        events are encrypted and subscribers need the matching NAME.key (None: no CURVE).
    curve_clients_dir: with CURVE, only subscribers whose public keys (*.key) are in this
        directory may connect (None: any subscriber that has the detector's public key).
    """

    endpoint: str = "tcp://127.0.0.1:5556"
    heartbeat_s: float | None = 1.0
    send_hwm: int = 10000
    curve_secret_key: str | None = None
    curve_clients_dir: str | None = None

    def __post_init__(self) -> None:
        if "://" not in self.endpoint:
            raise ValueError(f"endpoint must look like tcp://HOST:PORT, got {self.endpoint!r}")
        check_positive(self, "heartbeat_s", "send_hwm")
        if self.curve_clients_dir and not self.curve_secret_key:
            raise ValueError("curve_clients_dir needs curve_secret_key (the detector's key pair)")


logger = logging.getLogger(__name__)

LINGER_MS = 500  # how long close() may spend flushing queued messages
SUBSCRIPTION_POLL_S = 0.05  # a joining subscriber gets its snapshot within about this
QUEUE_MAX = 100_000
_CLOSE = object()  # queued by close(): send what is queued, then stop


class PublisherError(OSError):
    """The publisher could not bind its endpoint."""


class Publisher:
    """Publishes messages as multipart [topic, JSON] on a bound PUB socket.

    Args:
        endpoint: where to bind, e.g. tcp://127.0.0.1:5556.
        run_id: this process run's id, in every message.
        streams: the streams heartbeats report, each "connecting" until a `StreamStatus`
            about it is sent (heartbeats then report the last state sent).
        heartbeat_s: seconds between heartbeats (None: none).
        send_hwm: ZeroMQ send high-water mark.
        on_sent: called with (topic, payload bytes, message) after each send (printing,
            metrics); runs on the publisher thread.
        clock: wall clock for message times.
        metrics: counts events and drops, observes frame-to-event latency (default: a
            registry of its own).
    """

    def __init__(
        self,
        endpoint: str,
        *,
        run_id: str,
        streams: list[str] | tuple[str, ...] = (),
        heartbeat_s: float | None = 1.0,
        send_hwm: int = 10000,
        on_sent: Callable[[str, bytes, Message], None] | None = None,
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
        curve: CurveServer | None = None,
    ) -> None:
        self.endpoint = endpoint
        self._curve = curve
        self.run_id = run_id
        self.heartbeat_s = heartbeat_s
        self._states = {stream: "connecting" for stream in streams}  # publisher thread's
        self._send_hwm = send_hwm
        self._on_sent = on_sent
        self._clock = clock
        self._metrics = metrics or Metrics()
        self._queue: queue.Queue[Message | object] = queue.Queue(QUEUE_MAX)
        self._ready = threading.Event()
        self._error: str | None = None
        self._seq: dict[str, int] = {}
        # publisher thread's: the last status sent per stream, the onsets still open, and
        # the subscriptions' topic prefixes (with multiplicity)
        self._last_status: dict[str, StreamStatus] = {}
        self._open: dict[str, ActionEvent] = {}
        self._subscriptions: dict[bytes, int] = {}
        self.bound_endpoint: str | None = None
        self.dropped = 0
        self.sent = 0  # messages that at least one subscription matched
        self.unheard = 0  # messages no subscriber was there for
        self._started_s = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="publisher", daemon=True)

    def start(self, timeout_s: float = 5.0) -> str:
        """Binds (on the publisher thread) and returns the bound endpoint; raises
        `PublisherError` if the endpoint cannot be bound."""
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise PublisherError(f"{self.endpoint}: publisher did not start within {timeout_s} s")
        if self._error is not None:
            self._thread.join(timeout_s)
            raise PublisherError(self._error)
        return self.bound_endpoint or self.endpoint

    def publish(self, message: Message) -> None:
        """Queues a message; never blocks (a full queue drops and counts)."""
        try:
            self._queue.put_nowait(message)
        except queue.Full:
            self.dropped += 1
            self._metrics.messages_dropped.inc()

    def close(self, timeout_s: float = 5.0) -> None:
        """Sends what is queued, then closes the socket and joins the thread."""
        if self._thread.is_alive():
            self._queue.put(_CLOSE)
            self._thread.join(timeout_s)

    def current(self) -> tuple[dict[str, str], list[ActionEvent]]:
        """Each stream's last state sent and the onsets of the actions still open, as copies
        (any thread may ask: the HTTP API does)."""
        return dict(self._states), list(self._open.values())

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        # A CURVE server gets a context of its own: its ZAP authenticator then governs
        # this socket only.
        ctx = zmq.Context() if self._curve else zmq.Context.instance()
        sock = ctx.socket(zmq.XPUB)
        sock.setsockopt(zmq.SNDHWM, self._send_hwm)
        sock.setsockopt(zmq.LINGER, LINGER_MS)
        # every subscription and unsubscription reaches us, also repeats of a known prefix
        sock.setsockopt(zmq.XPUB_VERBOSER, 1)
        try:
            if self._curve:
                self._curve.apply(ctx, sock)
            sock.bind(self.endpoint)
            self.bound_endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        except zmq.ZMQError as exc:
            self._error = (
                f"event endpoint {self.endpoint}: cannot bind ({exc.strerror}); choose another"
                " with --zmq, e.g. --zmq tcp://127.0.0.1:5557"
            )
            sock.close(0)
            self._close_curve(ctx)
            self._ready.set()
            return
        self._ready.set()
        logger.info("publishing events on %s", self.bound_endpoint)
        next_beat = time.monotonic() if self.heartbeat_s else None
        try:
            while True:
                self._take_subscriptions(sock)
                wait = SUBSCRIPTION_POLL_S
                if next_beat is not None:
                    wait = min(wait, max(0.0, next_beat - time.monotonic()))
                try:
                    message = self._queue.get(timeout=wait)
                except queue.Empty:
                    message = None  # time for a heartbeat or a look at subscriptions
                if message is _CLOSE:
                    break
                if message is not None:
                    self._send(sock, message)
                if next_beat is not None and time.monotonic() >= next_beat:
                    uptime = time.monotonic() - self._started_s
                    self._send(sock, Heartbeat(uptime, dict(self._states)))
                    next_beat += self.heartbeat_s
                    if next_beat < time.monotonic():  # fell behind (suspended): skip beats
                        next_beat = time.monotonic() + self.heartbeat_s
            while True:  # drain what was queued before close()
                try:
                    message = self._queue.get_nowait()
                except queue.Empty:
                    break
                if message is not _CLOSE:
                    self._send(sock, message)
        except Exception:
            logger.exception("publisher crashed")
        finally:
            sock.close(LINGER_MS)
            self._close_curve(ctx)

    def _close_curve(self, ctx: zmq.Context) -> None:
        if self._curve:
            self._curve.close()
            ctx.term()

    def _take_subscriptions(self, sock: zmq.Socket) -> None:
        """Reads the subscription messages waiting on the XPUB socket; the new subscriptions
        (a subscriber's prefixes arrive together) get one snapshot at once."""
        joined: list[bytes] = []
        while True:
            try:
                frame = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            if not frame or frame[0] not in (0, 1):
                continue  # not a subscription message (subscribers send nothing else)
            prefix = frame[1:]
            count = self._subscriptions.get(prefix, 0) + (1 if frame[0] == 1 else -1)
            if count > 0:
                self._subscriptions[prefix] = count
            else:
                self._subscriptions.pop(prefix, None)
            if frame[0] == 1:
                joined.append(prefix)
        if joined:
            self._send_snapshot(sock, joined)

    def _send_snapshot(self, sock: zmq.Socket, prefixes: list[bytes]) -> None:
        """Each stream's current status, then every open action's onset, that `prefixes`
        select (other subscribers that match get them too: they are marked)."""
        statuses = [
            self._last_status.get(stream) or StreamStatus(stream, state)
            for stream, state in self._states.items()
        ]
        for message in [*statuses, *self._open.values()]:
            topic = message.topic.encode()
            if any(topic.startswith(prefix) for prefix in prefixes):
                self._send(sock, message, snapshot=True)

    def _heard(self, topic: bytes) -> bool:
        return any(topic.startswith(prefix) for prefix in self._subscriptions)

    def _send(self, sock: zmq.Socket, message: Message, *, snapshot: bool = False) -> None:
        key = getattr(message, "stream", None) or ""
        seq = self._seq.get(key, 0)
        self._seq[key] = seq + 1
        topic, payload = encode(
            message, run_id=self.run_id, seq=seq, wall_s=self._clock(), snapshot=snapshot
        )
        try:
            sock.send_multipart([topic, payload], flags=zmq.NOBLOCK)
        except zmq.Again:
            self.dropped += 1
            self._metrics.messages_dropped.inc()
            return
        if self._heard(topic):
            self.sent += 1
        else:
            self.unheard += 1
            self._metrics.messages_unheard.inc()
        if snapshot:
            return  # state re-sent, not news: no state change, no event counted
        if isinstance(message, StreamStatus):
            self._states[message.stream] = message.state
            self._last_status[message.stream] = message
        if isinstance(message, ActionEvent):
            if message.type == "onset":
                self._open[message.event_id] = message
            else:
                self._open.pop(message.event_id, None)
            now = time.time()
            self._metrics.events.labels(message.stream, message.type, message.label).inc()
            self._metrics.frame_to_event_seconds.labels(message.stream).observe(
                now - message.frame_wall_s
            )
        if self._on_sent is not None:
            try:
                self._on_sent(topic.decode(), payload, message)
            except Exception:
                logger.exception("on_sent callback failed")
