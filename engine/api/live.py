"""The web view's live feeds: every message the detector sends, pushed to each page over
Server-Sent Events, and each stream's frames as MJPEG — neither ever blocks the detector.

A page's feed is a bounded queue filled on the publisher's thread: a page that stops reading
fills it and is dropped (its connection closed), as is one whose socket accepts nothing for
`SEND_TIMEOUT_S`. Frames come from `stream.preview.Previews`, which the readers fill only
while a page watches; each JPEG is encoded once per frame and width, whoever watches.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable

from starlette.responses import Response

from stream.preview import Previews

logger = logging.getLogger(__name__)

QUEUE_MESSAGES = 2000  # a page further behind than this is dropped
SEND_TIMEOUT_S = 5.0  # a socket that takes nothing for this long is dropped
KEEPALIVE_S = 15.0


class PushResponse(Response):
    """A streamed response whose every write must complete within `SEND_TIMEOUT_S` (else the
    connection is closed), that ends when the client goes away, and that calls `on_close`
    however it ends."""

    def __init__(
        self,
        chunks: AsyncIterator[bytes],
        media_type: str,
        on_close: Callable[[str], None] = lambda _why: None,
    ) -> None:
        super().__init__(media_type=media_type)
        self.chunks, self.on_close = chunks, on_close
        self.headers["cache-control"] = "no-store"
        self.headers["x-accel-buffering"] = "no"
        del self.headers["content-length"]

    async def __call__(self, scope, receive, send) -> None:
        gone = asyncio.Event()

        async def listen() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        listener = asyncio.ensure_future(listen())
        why = "ended"
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            async for chunk in self.chunks:
                if gone.is_set():
                    why = "client left"
                    break
                async with asyncio.timeout(SEND_TIMEOUT_S):  # no task per write
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            else:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except TimeoutError:
            why = "not reading"
            abort = getattr(scope.get("app").state, "abort_client", None) if scope.get(
                "app") else None  # fmt: skip
            if abort is not None:
                abort(scope.get("client"))
                for _ in range(3):  # the server sees the connection lost, and says nothing
                    await asyncio.sleep(0)
        except OSError:
            why = "client left"
        finally:
            listener.cancel()
            aclose = getattr(self.chunks, "aclose", None)
            if aclose is not None:
                await aclose()
            self.on_close(why)


class _Feed:
    """One page's queue of messages, filled from any thread, read on the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.items: deque[str] = deque()
        self.ready = asyncio.Event()
        self.dropped = False

    def push(self, item: str) -> None:  # on the event loop
        if self.dropped:
            return
        if len(self.items) >= QUEUE_MESSAGES:
            self.dropped = True
        else:
            self.items.append(item)
        self.ready.set()


class LiveHub:
    """Fans the detector's sent messages out to the pages' event feeds. `on_sent` is a sink
    of `engine.cli.outputs.Outputs` (called on the publisher thread); `snapshot()` gives
    what a page needs first, `stats()` what it refreshes every second."""

    def __init__(
        self,
        snapshot: Callable[[], dict],
        stats: Callable[[], dict],
        on_drop: Callable[[], None] = lambda: None,
    ) -> None:
        self.snapshot, self.stats, self.on_drop = snapshot, stats, on_drop
        self._feeds: set[_Feed] = set()
        self._lock = threading.Lock()

    @property
    def clients(self) -> int:
        return len(self._feeds)

    def on_sent(self, _topic: str, payload: bytes, _message: object) -> None:
        text = payload.decode()
        with self._lock:
            feeds = list(self._feeds)
        for feed in feeds:
            try:
                feed.loop.call_soon_threadsafe(feed.push, text)
            except RuntimeError:  # its loop is closed: the server stopped
                pass

    def response(self) -> PushResponse:
        feed = _Feed(asyncio.get_running_loop())
        with self._lock:
            self._feeds.add(feed)

        def close(why: str) -> None:
            with self._lock:
                self._feeds.discard(feed)
            if feed.dropped or why == "not reading":
                self.on_drop()

        return PushResponse(self._events(feed), "text/event-stream", close)

    async def _events(self, feed: _Feed) -> AsyncIterator[bytes]:
        yield _sse("hello", json.dumps(self.snapshot()))
        next_stats = time.monotonic()
        last_sent = time.monotonic()
        while not feed.dropped:
            now = time.monotonic()
            if now >= next_stats:
                next_stats = now + 1.0
                last_sent = now
                yield _sse("stats", json.dumps(self.stats()))
            if feed.items:
                batch = b"".join(_sse("message", feed.items.popleft()) for _ in range(
                    min(len(feed.items), 64)))  # fmt: skip
                last_sent = now
                yield batch
                continue
            if now - last_sent > KEEPALIVE_S:
                last_sent = now
                yield b": keep-alive\n\n"
            feed.ready.clear()
            try:
                await asyncio.wait_for(feed.ready.wait(), max(0.01, next_stats - now))
            except TimeoutError:
                pass


def _sse(event: str, data: str) -> bytes:
    return f"event: {event}\ndata: {data}\n\n".encode()


BOUNDARY = "actstream-frame"


async def mjpeg_frames(
    previews: Previews, stream_id: str, *, width: int, fps: float, watcher: object
) -> AsyncIterator[bytes]:
    """multipart/x-mixed-replace parts: the stream's newest preview whenever there is a newer
    one, at most `fps` a second, keeping the readers making previews while it runs."""
    period = 1.0 / fps
    seq = 0
    try:
        while True:
            previews.watch(stream_id, watcher, width=width, fps=fps)
            latest = previews.latest(stream_id)
            if latest is not None and latest.seq > seq:
                seq, data = latest.seq, latest.jpeg
                head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(data)}"
                yield head.encode() + b"\r\n\r\n" + data + b"\r\n"
            await asyncio.sleep(period)
    finally:
        previews.unwatch(stream_id, watcher)


def histogram_quantiles(buckets: list[tuple[float, float]], qs: tuple[float, ...]) -> list:
    """Quantiles of a histogram given as cumulative (upper bound, count) pairs, sorted,
    interpolated within a bucket as Prometheus's histogram_quantile does; None when empty."""
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return [None for _ in qs]
    out = []
    for q in qs:
        rank = q * total
        lower_bound, lower_count = 0.0, 0.0
        for bound, count in buckets:
            if count >= rank:
                if bound == float("inf"):
                    out.append(lower_bound)
                else:
                    share = (rank - lower_count) / max(count - lower_count, 1e-12)
                    out.append(lower_bound + (bound - lower_bound) * share)
                break
            lower_bound, lower_count = bound, count
    return out


class HistogramWindow:
    """Quantiles of Prometheus histograms over about the last `window_s`: cumulative bucket
    counts are sampled on each call and the oldest sample within the window subtracted."""

    def __init__(self, registry, window_s: float = 60.0) -> None:
        self.registry, self.window_s = registry, window_s
        self._samples: deque[tuple[float, dict]] = deque()

    def read(self, names: dict[str, str]) -> dict[str, dict[str, tuple[list, float]]]:
        """{histogram name: {label value of its `by`: (cumulative (le, count) pairs, sum)}}
        now, in one pass over the registry."""
        out: dict[str, dict[str, tuple[list, float]]] = {name: {} for name in names}
        for family in self.registry.collect():
            if family.name not in names:
                continue
            by, series = names[family.name], out[family.name]
            for s in family.samples:
                key = s.labels.get(by, "")
                buckets, total = series.setdefault(key, ([], 0.0))
                if s.name.endswith("_bucket"):
                    buckets.append((float(s.labels["le"]), s.value))
                elif s.name.endswith("_sum"):
                    series[key] = (buckets, s.value)
        return out

    def quantiles(self, names: dict[str, str], qs=(0.5, 0.99)) -> dict[str, dict[str, list]]:
        """For each histogram name (→ its label to split by): {label: [q..., mean]} over the
        window (since start while the window saw nothing)."""
        now = time.monotonic()
        current = self.read(names)
        self._samples.append((now, current))
        while len(self._samples) > 1 and now - self._samples[0][0] > self.window_s:
            self._samples.popleft()
        base = self._samples[0][1] if len(self._samples) > 1 else {}
        out: dict[str, dict[str, list]] = {}
        for name, series in current.items():
            out[name] = {}
            for key, (buckets, total) in series.items():
                old_buckets, old_total = base.get(name, {}).get(key, ([], 0.0))
                before = dict(old_buckets)
                diff = sorted((le, count - before.get(le, 0.0)) for le, count in buckets)
                if not diff or diff[-1][1] <= 0:  # nothing in the window: since start
                    diff, old_total = sorted(buckets), 0.0
                count = diff[-1][1] if diff else 0.0
                mean = (total - old_total) / count if count > 0 else None
                out[name][key] = [*histogram_quantiles(diff, qs), mean]
        return out
