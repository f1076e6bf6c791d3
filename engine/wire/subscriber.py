"""Subscribing to a detector's events: topic prefixes from filters, and gap detection from
per-stream sequence numbers."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import zmq

from engine.wire.events import MESSAGE_TYPES, decode
from engine.wire.security import KeyFileError, make_client

LINGER_MS = 0


@dataclass(frozen=True, slots=True)
class Gap:
    """`missed` messages of `stream` (run `run_id`) never arrived: seq `first`..`last`."""

    run_id: str
    stream: str | None
    first: int
    last: int

    @property
    def missed(self) -> int:
        return self.last - self.first + 1


class GapDetector:
    """Watches (run_id, stream) sequence numbers; reports the numbers that were skipped."""

    def __init__(self) -> None:
        self._next: dict[tuple[str, str | None], int] = {}

    def observe(self, message: dict[str, Any]) -> Gap | None:
        key = (message["run_id"], message.get("stream"))
        seq = int(message["seq"])
        expected = self._next.get(key)
        self._next[key] = max(seq + 1, expected or 0)
        if expected is not None and seq > expected:
            return Gap(key[0], key[1], expected, seq - 1)
        return None


def topic_prefixes(streams: list[str], types: list[str]) -> list[str]:
    """ZeroMQ subscription prefixes that cover the filters (labels are filtered client-side)."""
    unknown = sorted(set(types) - set(MESSAGE_TYPES))
    if unknown:
        raise ValueError(f"unknown message type(s) {unknown}; known: {list(MESSAGE_TYPES)}")
    types = types or list(MESSAGE_TYPES)
    prefixes: list[str] = []
    for t in types:
        if t == "heartbeat":
            prefixes.append("heartbeat")
            continue
        category = t if t in ("status", "clip") else "action"
        for s in streams or [None]:
            if s is None:
                prefixes.append(f"{category}.")
            elif category != "action":
                prefixes.append(f"{category}.{s}.")
            else:
                prefixes.append(f"action.{s}.{t}.")
    return sorted(set(prefixes))


def matches(
    message: dict[str, Any], *, streams: list[str], labels: list[str], types: list[str]
) -> bool:
    if types and message["type"] not in types:
        return False
    if streams and message["type"] != "heartbeat" and message.get("stream") not in streams:
        return False
    if labels and message["type"] in ("onset", "offset") and message.get("label") not in labels:
        return False
    return True


class Subscriber:
    """A SUB socket connected to a detector; iterate for (topic, message, gap or None).

    Gaps are only reported when the subscription sees every message of a stream (no type or
    label filter), since filtered-out messages would look like losses.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        streams: list[str] | None = None,
        labels: list[str] | None = None,
        types: list[str] | None = None,
        receive_hwm: int = 100_000,
        curve_server_key: str | None = None,
        curve_client_key: str | None = None,
    ) -> None:
        """`curve_server_key` (the detector's NAME.key) and `curve_client_key` (this
        subscriber's NAME.key_secret) make the connection CURVE-encrypted and authenticated;
        give both or neither (`KeyFileError` otherwise)."""
        self.streams, self.labels, self.types = streams or [], labels or [], types or []
        self.prefixes = topic_prefixes(self.streams, self.types)
        self.check_gaps = not self.labels and not self.types
        self.gaps = GapDetector()
        self._ctx = zmq.Context.instance()
        self.socket = self._ctx.socket(zmq.SUB)
        self.socket.setsockopt(zmq.RCVHWM, receive_hwm)
        self.socket.setsockopt(zmq.LINGER, LINGER_MS)
        for prefix in self.prefixes:
            self.socket.setsockopt_string(zmq.SUBSCRIBE, prefix)
        if curve_server_key or curve_client_key:
            if not (curve_server_key and curve_client_key):
                self.socket.close(0)
                raise KeyFileError(
                    "CURVE needs both the detector's public key (--curve-server-key "
                    "NAME.key) and this subscriber's key pair (--curve-client-key "
                    "NAME.key_secret)"
                )
            try:
                make_client(self.socket, curve_server_key, curve_client_key)
            except KeyFileError:
                self.socket.close(0)
                raise
        self.socket.connect(endpoint)

    def receive(self, timeout_s: float | None) -> tuple[str, dict[str, Any], Gap | None] | None:
        """Next matching message, or None if nothing arrives within `timeout_s`."""
        poller = zmq.Poller()
        poller.register(self.socket, zmq.POLLIN)
        while True:
            ready = poller.poll(None if timeout_s is None else int(timeout_s * 1000))
            if not ready:
                return None
            topic, message = decode(self.socket.recv_multipart())
            gap = self.gaps.observe(message) if self.check_gaps else None
            if matches(message, streams=self.streams, labels=self.labels, types=self.types):
                return topic, message, gap

    def __iter__(self) -> Iterator[tuple[str, dict[str, Any], Gap | None]]:
        while True:
            item = self.receive(None)
            if item is not None:
                yield item

    def close(self) -> None:
        self.socket.close(LINGER_MS)
