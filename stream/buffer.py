"""Bounded frame buffers with a named drop policy; every drop is counted."""

from __future__ import annotations

import enum
import threading
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class DropPolicy(enum.Enum):
    """What a full buffer does with a new item."""

    DROP_OLDEST = "drop_oldest"  # live sources: the newest frame matters, old ones are stale
    BLOCK = "block"  # files: wait for the consumer, lose nothing


class BufferClosed(Exception):
    """Raised by `put` once the buffer is closed."""


class FrameBuffer(Generic[T]):
    """A bounded FIFO shared by one producer thread and one consumer thread.

    Args:
        capacity: most frames held at once.
        policy: what `put` does with a frame when full.
        ready: optional event set on every put, so a consumer can wait on many buffers.
        is_frame: which items are frames (default: all). Other items (status markers) keep
            their place in the order but never count towards capacity, never block and are
            never dropped.
    """

    def __init__(
        self,
        capacity: int,
        policy: DropPolicy,
        ready: threading.Event | None = None,
        is_frame: Callable[[T], bool] | None = None,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self.policy = policy
        self._items: deque[T] = deque()
        self._frames = 0
        self._cond = threading.Condition()
        self._ready = ready
        self._is_frame = is_frame or (lambda _item: True)
        self._closed = False
        self.dropped = 0

    def put(self, item: T, timeout_s: float | None = None) -> int:
        """Adds an item; returns how many frames were dropped for it (0 or 1).

        With `BLOCK`, waits until there is room (or `timeout_s` passes: then the frame is
        dropped and counted). Raises `BufferClosed` if the buffer is closed.
        """
        dropped = 0
        frame = self._is_frame(item)
        with self._cond:
            if self._closed:
                raise BufferClosed
            if frame and self._frames >= self.capacity:
                if self.policy is DropPolicy.DROP_OLDEST:
                    self._drop_oldest_frame()
                    dropped = 1
                else:
                    has_room = self._cond.wait_for(
                        lambda: self._closed or self._frames < self.capacity, timeout_s
                    )
                    if self._closed:
                        raise BufferClosed
                    if not has_room:
                        self.dropped += 1
                        return 1
            self._items.append(item)
            self._frames += frame
            self.dropped += dropped
        if self._ready is not None:
            self._ready.set()
        return dropped

    def _drop_oldest_frame(self) -> None:
        for i, old in enumerate(self._items):
            if self._is_frame(old):
                del self._items[i]
                self._frames -= 1
                return

    def get_many(self, max_items: int) -> list[T]:
        """Removes and returns up to `max_items` items, oldest first, without waiting."""
        with self._cond:
            n = min(max_items, len(self._items))
            out = [self._items.popleft() for _ in range(n)]
            if n:
                self._frames -= sum(1 for item in out if self._is_frame(item))
                self._cond.notify_all()
        return out

    def close(self) -> None:
        """Wakes a blocked producer; further puts raise `BufferClosed`."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._ready is not None:
            self._ready.set()

    def __len__(self) -> int:
        """Frames waiting (status markers not counted)."""
        with self._cond:
            return self._frames
