"""An in-memory publisher: keeps every message, in order, instead of sending it (offline
replay, evaluation and tests need no sockets)."""

from __future__ import annotations


class MemoryPublisher:
    """Stands in for the ZeroMQ publisher (same methods): keeps every message in memory, in
    order. Nothing may be published after `close`."""

    def __init__(self) -> None:
        self.messages: list = []
        self.bound_endpoint = "memory"
        self.closed = False

    def publish(self, message) -> None:
        if self.closed:
            raise RuntimeError("publish after close")
        self.messages.append(message)

    def close(self, timeout_s: float = 0.0) -> None:
        self.closed = True

    def is_alive(self) -> bool:
        return False
