"""Live sources against a real RTSP server that dies, restarts and freezes; HTTP and camera
sources."""

import functools
import http.server
import signal
import threading
import time

import pytest

from stream.buffer import DropPolicy, FrameBuffer
from stream.frames import Frame
from stream.reader import ReaderState, StatusEvent, StreamReader
from stream.settings import ReaderOptions, StreamConfig
from stream.sources import parse_source
from tests.conftest import RtspServer, free_port
from tests.integration.helpers import (
    ScriptedHead,
    connect_subscriber,
    drain,
    make_detector,
    run_in_thread,
    scrape,
    small_config,
)

pytestmark = pytest.mark.integration
FAST_RETRY = dict(reconnect_initial_s=0.2, reconnect_max_s=0.5, reconnect_jitter=0.1)


class Watch:
    """Runs a reader and records (time, item) for everything it delivers."""

    def __init__(self, spec, options, capacity=64):
        self.buf = FrameBuffer(
            capacity, DropPolicy.DROP_OLDEST, is_frame=lambda i: isinstance(i, Frame)
        )
        self.reader = StreamReader(spec, self.buf, options)
        self.log: list[tuple[float, object]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain)
        self.reader.start()
        self._thread.start()

    def _drain(self):
        while not self._stop.is_set():
            for item in self.buf.get_many(100):
                self.log.append((time.monotonic(), item))
            time.sleep(0.01)

    def states(self):
        return [i.state for _, i in self.log if isinstance(i, StatusEvent)]

    def wait_for(self, state, after: float = 0.0, timeout_s: float = 15.0) -> float:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for t, item in list(self.log):
                if t >= after and isinstance(item, StatusEvent) and item.state is state:
                    return t
            time.sleep(0.02)
        raise AssertionError(f"no {state} after {after}; states: {self.states()}")

    def frames_after(self, t0: float) -> int:
        return sum(1 for t, i in self.log if t > t0 and isinstance(i, Frame))

    def close(self):
        self.reader.stop()
        self.buf.close()
        self.reader.join(10)
        self._stop.set()
        self._thread.join(5)
        assert not self.reader.is_alive()


def test_reader_reconnects_after_the_server_is_killed_and_restarted():
    port = free_port()
    server = RtspServer("--source", "testsrc", port=port)
    watch = Watch(
        parse_source(server.url), ReaderOptions(stream=StreamConfig(timeout_s=2.0, **FAST_RETRY))
    )
    try:
        watch.wait_for(ReaderState.CONNECTED)
        time.sleep(0.5)
        server.proc.send_signal(signal.SIGKILL)
        server.stop()
        down = watch.wait_for(ReaderState.DISCONNECTED)
        time.sleep(1.0)  # refused while the server is away: retried with back-off
        server = RtspServer("--source", "testsrc", port=port)
        up = watch.wait_for(ReaderState.CONNECTED, after=down)
        time.sleep(0.5)
        assert watch.frames_after(up) >= 3
        states = watch.states()
        assert states[:3] == [
            ReaderState.CONNECTED,
            ReaderState.DISCONNECTED,
            ReaderState.RECONNECTING,
        ]
        assert watch.reader.reconnects >= 1
    finally:
        watch.close()
        server.stop()
    assert watch.reader.state is ReaderState.STOPPED


def test_frozen_server_is_detected_by_the_timeout_and_reconnected():
    server = RtspServer("--source", "testsrc")
    watch = Watch(
        parse_source(server.url), ReaderOptions(stream=StreamConfig(timeout_s=1.0, **FAST_RETRY))
    )
    try:
        watch.wait_for(ReaderState.CONNECTED)
        time.sleep(0.3)
        frozen_at = time.monotonic()
        server.proc.send_signal(signal.SIGSTOP)  # a hung camera: connection open, no data
        down = watch.wait_for(ReaderState.DISCONNECTED, after=frozen_at)
        assert down - frozen_at < 5.0  # about twice the 1 s timeout
        detail = [
            i.detail
            for _, i in watch.log
            if isinstance(i, StatusEvent) and i.state is ReaderState.DISCONNECTED
        ][0]
        assert "stalled" in detail or "error" in detail
        server.proc.send_signal(signal.SIGCONT)
        up = watch.wait_for(ReaderState.CONNECTED, after=down)
        time.sleep(0.5)
        assert watch.frames_after(up) >= 2
    finally:
        server.proc.send_signal(signal.SIGCONT)
        watch.close()
        server.stop()


def test_http_source_streams_a_file_served_over_http(clip_mp4):
    handler = functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(clip_mp4.parent)
    )
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    serve = threading.Thread(target=httpd.serve_forever)
    serve.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/{clip_mp4.name}"
        spec = parse_source(url)
        # The file arrives as fast as it decodes: room for all of it, so that none is dropped
        # between two drains.
        watch = Watch(
            spec, ReaderOptions(fps=25.0, stream=StreamConfig(timeout_s=2.0, **FAST_RETRY)), 256
        )
        try:
            watch.wait_for(ReaderState.CONNECTED)
            # The whole file arrives, then the live HTTP stream ends: a disconnect.
            watch.wait_for(ReaderState.DISCONNECTED)
            assert watch.frames_after(0) == 100
        finally:
            watch.close()
    finally:
        httpd.shutdown()
        httpd.server_close()
        serve.join(5)


def test_missing_camera_device_fails_with_a_clear_message():
    spec = parse_source("/dev/video63?video_size=640x480")
    buf = FrameBuffer(4, DropPolicy.DROP_OLDEST)
    reader = StreamReader(spec, buf, ReaderOptions())
    reader.start()
    reader.join(10)
    assert not reader.is_alive() and reader.state is ReaderState.FAILED
    assert reader.first_error.startswith("/dev/video63?video_size=640x480: cannot open the camera")


def live_detector(sources: list[str], head, run_id: str):
    """A started detector with fast reconnects, its /metrics served, and a joined subscriber."""
    metrics_port = free_port()
    config = small_config(
        "stream.reconnect_initial_s=0.1",
        "stream.reconnect_max_s=0.4",
        "stream.timeout_s=2",
        f"metrics.port={metrics_port}",
    )
    detector = make_detector(sources, config, head, run_id=run_id, metrics=True)
    detector.metrics.serve("127.0.0.1", metrics_port)
    sub = connect_subscriber(detector.publisher.bound_endpoint)
    detector.start()
    return detector, sub, metrics_port


def shut_down(stop, loop, detector, server) -> None:
    stop.set()
    loop.join(10)
    detector.close()
    server.stop()


def test_detector_closes_open_actions_on_disconnect_and_reports_the_reconnect():
    port = free_port()
    server = RtspServer("--source", "testsrc", port=port)
    head = ScriptedHead({"cam": [(0.3, 1e9, "wave", 0.9)]})
    detector, sub, metrics_port = live_detector([f"cam={server.url}"], head, "rc")
    stop, loop = run_in_thread(detector)
    try:
        time.sleep(1.5)
        server.stop()
        time.sleep(1.0)
        server = RtspServer("--source", "testsrc", port=port)
        time.sleep(2.0)
        metrics = scrape(metrics_port)
    finally:
        shut_down(stop, loop, detector, server)
    messages = drain(sub)
    sub.close()
    kinds = [(m["type"], m.get("state") or m.get("reason")) for m in messages]
    first_offset = kinds.index(("offset", "disconnected"))
    assert kinds[0] == ("status", "connected") and kinds[1] == ("onset", None)
    assert kinds[first_offset + 1] == ("status", "disconnected")
    assert ("status", "reconnecting") in kinds[first_offset:]
    reconnected = kinds.index(("status", "connected"), first_offset)
    assert ("onset", None) in kinds[reconnected:]  # the new connection is a new timeline
    assert [m["seq"] for m in messages] == list(range(len(messages)))
    assert metrics[("actstream_stream_reconnects_total", (("stream", "cam"),))] >= 1
    assert metrics[("actstream_stream_up", (("stream", "cam"),))] == 1


def test_five_server_restarts_each_reconnect_while_the_other_stream_keeps_flowing():
    port = free_port()
    server = RtspServer("--source", "testsrc", port=port)
    sources = [f"cam={server.url}", "other=synthetic://?seed=1"]
    detector, sub, metrics_port = live_detector(sources, ScriptedHead({}), "r5")
    stop, loop = run_in_thread(detector)
    other = ("actstream_frames_processed_total", (("stream", "other"),))
    flowing = []
    try:
        for _ in range(5):
            time.sleep(1.0)
            server.proc.send_signal(signal.SIGKILL)  # killed mid-stream, no goodbye
            server.stop()
            before = scrape(metrics_port)[other]
            time.sleep(0.8)
            flowing.append(scrape(metrics_port)[other] - before)  # the other stream, meanwhile
            server = RtspServer("--source", "testsrc", port=port)
        time.sleep(2.0)
        metrics = scrape(metrics_port)
    finally:
        shut_down(stop, loop, detector, server)
    cam = [m["state"] for m in drain(sub) if m["type"] == "status" and m["stream"] == "cam"]
    drops = sum(
        1 for a, b in zip(cam, cam[1:], strict=False) if (a, b) == ("connected", "disconnected")
    )
    assert drops == 5, cam  # (each refused retry while the server is away also reports)
    assert cam.count("connected") == 6, cam  # the first connection and one per restart
    assert cam[-1] == "stopped"
    assert metrics[("actstream_stream_reconnects_total", (("stream", "cam"),))] >= 5
    assert metrics[("actstream_stream_up", (("stream", "cam"),))] == 1
    assert min(flowing) >= 4, flowing  # ~8 frames at 10 fps in each 0.8 s outage
