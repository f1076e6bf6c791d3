"""`actstream proxy`: one endpoint for the events of several detector processes.

An XSUB socket connects to every detector's endpoint and an XPUB socket binds for
subscribers; messages flow down, subscriptions flow up (so detectors still filter by topic,
and send a subscriber that joins through the proxy their snapshot).
Messages keep their detector's `run_id` and per-stream `seq`, so subscribers still see gaps.
"""

from __future__ import annotations

import threading

import zmq


class ProxyError(OSError):
    """The proxy cannot start; the message names the endpoint."""


class Proxy:
    """Forwards between an XSUB (connected to `upstreams`) and an XPUB bound at `bind`."""

    def __init__(self, upstreams: list[str], bind: str, *, hwm: int = 100_000) -> None:
        if not upstreams:
            raise ProxyError("no detector endpoints given (--upstream tcp://HOST:PORT)")
        self.ctx = zmq.Context()
        self.xsub = self.ctx.socket(zmq.XSUB)
        self.xpub = self.ctx.socket(zmq.XPUB)
        for sock in (self.xsub, self.xpub):
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.RCVHWM, hwm)
            sock.setsockopt(zmq.SNDHWM, hwm)
        # every subscription and unsubscription goes up, also repeats of a known prefix: each
        # subscriber that joins gets its detector's snapshot, and detectors count correctly
        self.xpub.setsockopt(zmq.XPUB_VERBOSER, 1)
        try:
            for endpoint in upstreams:
                try:
                    self.xsub.connect(endpoint)
                except zmq.ZMQError as exc:
                    raise ProxyError(f"upstream {endpoint}: {exc.strerror}") from None
            try:
                self.xpub.bind(bind)
            except zmq.ZMQError as exc:
                raise ProxyError(
                    f"{bind}: cannot bind ({exc.strerror}); choose another --bind"
                ) from None
        except ProxyError:
            self.close()
            raise
        self.endpoint = self.xpub.getsockopt_string(zmq.LAST_ENDPOINT)
        self.forwarded = 0

    def run(self, stop: threading.Event) -> None:
        """Forwards until `stop` is set (checked every 100 ms)."""
        poller = zmq.Poller()
        poller.register(self.xsub, zmq.POLLIN)
        poller.register(self.xpub, zmq.POLLIN)
        while not stop.is_set():
            for sock, _ in poller.poll(100):
                if sock is self.xsub:
                    while True:
                        try:
                            frames = self.xsub.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        self.xpub.send_multipart(frames)
                        self.forwarded += 1
                else:  # a subscription (or unsubscription) from a subscriber, for the detectors
                    self.xsub.send_multipart(self.xpub.recv_multipart())

    def close(self) -> None:
        self.xsub.close(0)
        self.xpub.close(0)
        self.ctx.term()
