"""Live sources against a real RTSP server that dies, restarts and freezes; HTTP and camera
sources."""

import functools
import http.server
import signal
import threading
import time
from fractions import Fraction

import pytest

from stream.buffer import DropPolicy, FrameBuffer
from stream.frames import Frame
from stream.reader import ReaderState, StatusEvent, StreamReader
from stream.settings import ReaderOptions, StreamConfig
from stream.sources import parse_source
from tests.conftest import RtspServer, free_port, scaled, wait_until
from tests.integration.helpers import (
    ScriptedHead,
    connect_subscriber,
    drain,
    live,
    make_detector,
    metric,
    run_in_thread,
    scrape,
    small_config,
)
from tests.media import scene_frames

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
        deadline = time.monotonic() + scaled(timeout_s)
        while time.monotonic() < deadline:
            for t, item in list(self.log):
                if t >= after and isinstance(item, StatusEvent) and item.state is state:
                    return t
            time.sleep(0.02)
        raise AssertionError(f"no {state} after {after}; states: {self.states()}")

    def frames_after(self, t0: float) -> int:
        return sum(1 for t, i in list(self.log) if t > t0 and isinstance(i, Frame))

    def wait_frames(self, n: int, after: float) -> None:
        wait_until(lambda: self.frames_after(after) >= n, f"{n} frames after {after:.1f}")

    def close(self):
        self.reader.stop()
        self.buf.close()
        self.reader.join(scaled(10))
        self._stop.set()
        self._thread.join(scaled(5))
        assert not self.reader.is_alive()


def test_reader_reconnects_after_the_server_is_killed_and_restarted():
    port = free_port()
    server = RtspServer("--source", "testsrc", port=port)
    watch = Watch(
        parse_source(server.url), ReaderOptions(stream=StreamConfig(timeout_s=2.0, **FAST_RETRY))
    )
    try:
        watch.wait_frames(3, after=watch.wait_for(ReaderState.CONNECTED))
        server.proc.send_signal(signal.SIGKILL)
        server.stop()
        down = watch.wait_for(ReaderState.DISCONNECTED)
        # refused while the server is away: retried with back-off, and retried again
        wait_until(lambda: watch.reader.reconnects >= 2, "retried twice")
        server = RtspServer("--source", "testsrc", port=port)
        up = watch.wait_for(ReaderState.CONNECTED, after=down)
        watch.wait_frames(3, after=up)
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
        watch.wait_frames(3, after=watch.wait_for(ReaderState.CONNECTED))
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
        watch.wait_frames(2, after=watch.wait_for(ReaderState.CONNECTED, after=down))
    finally:
        server.proc.send_signal(signal.SIGCONT)
        watch.close()
        server.stop()


class _Serving:
    """A ThreadingHTTPServer on 127.0.0.1 in a thread (a context manager)."""

    def __init__(self, handler):
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{path}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(scaled(5))


def test_an_mp4_file_over_http_plays_once_and_ends(clip_mp4):
    handler = functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(clip_mp4.parent)
    )
    with _Serving(handler) as served:
        url = served.url(clip_mp4.name)
        options = ReaderOptions(fps=25.0, stream=StreamConfig(timeout_s=2.0, **FAST_RETRY))
        # The server reports a duration: a file, read once at its own pace, every frame kept
        # (the buffer blocks instead of dropping), then `ended` - never replayed.
        watch = Watch(parse_source(url), options, capacity=8)
        try:
            watch.wait_for(ReaderState.ENDED)
            assert watch.states() == [ReaderState.CONNECTED, ReaderState.ENDED]
            assert watch.frames_after(0) == 100 and watch.reader.reconnects == 0
            assert watch.buf.dropped == 0
        finally:
            watch.close()
        # `#live` says it is a live stream after all: its end is a disconnect, then a retry
        watch = Watch(parse_source(url + "#live"), options, capacity=256)
        try:
            assert watch.reader.spec.url == url  # the fragment never reaches the server
            watch.wait_for(ReaderState.DISCONNECTED)
            assert watch.frames_after(0) == 100
        finally:
            watch.close()


class _MjpegCamera(http.server.BaseHTTPRequestHandler):
    """An endless multipart MJPEG stream, as IP cameras serve it (until `stop` is set)."""

    stop = threading.Event()
    jpegs: list[bytes] = []
    requests: list[str] = []  # what http.server would have logged

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        self.end_headers()
        i = 0
        while not self.stop.is_set():
            jpeg = self.jpegs[i % len(self.jpegs)]
            head = f"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
            try:
                self.wfile.write(head.encode() + jpeg + b"\r\n")
                self.wfile.flush()
            except OSError:
                return
            i += 1
            self.stop.wait(scaled(0.04))

    def log_message(self, format, *args):  # noqa: A002 - http.server's signature
        self.requests.append(format % args)  # kept, not printed: the test's output stays clean


def _jpegs(n: int) -> list[bytes]:
    import av

    codec = av.CodecContext.create("mjpeg", "w")
    codec.width, codec.height, codec.pix_fmt = 160, 120, "yuvj420p"
    codec.time_base = Fraction(1, 25)
    out = []
    for i, image in enumerate(scene_frames(n, width=160, height=120)):
        frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuvj420p")
        frame.pts = i
        out += [bytes(p) for p in codec.encode(frame)]
    return out


def test_an_endless_mjpeg_stream_over_http_stays_live():
    _MjpegCamera.stop.clear()
    _MjpegCamera.requests.clear()
    _MjpegCamera.jpegs = _jpegs(10)
    with _Serving(_MjpegCamera) as served:
        options = ReaderOptions(fps=10.0, stream=StreamConfig(timeout_s=2.0, **FAST_RETRY))
        watch = Watch(parse_source(served.url("video.mjpg")), options)
        try:
            up = watch.wait_for(ReaderState.CONNECTED)
            assert watch.reader.spec.live
            watch.wait_frames(10, after=up)
            assert any('"GET /video.mjpg' in r for r in _MjpegCamera.requests)
            _MjpegCamera.stop.set()  # the camera goes away: a disconnect, not an end
            watch.wait_for(ReaderState.DISCONNECTED)
            assert ReaderState.ENDED not in watch.states()
        finally:
            _MjpegCamera.stop.set()
            watch.close()


def test_missing_camera_device_fails_with_a_clear_message():
    spec = parse_source("/dev/video63?video_size=640x480")
    buf = FrameBuffer(4, DropPolicy.DROP_OLDEST)
    reader = StreamReader(spec, buf, ReaderOptions())
    reader.start()
    reader.join(scaled(10))
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
    loop.join(scaled(10))
    detector.close()
    server.stop()


def test_detector_closes_open_actions_on_disconnect_and_reports_the_reconnect():
    port = free_port()
    server = RtspServer("--source", "testsrc", port=port)
    head = ScriptedHead({"cam": [(0.3, 1e9, "wave", 0.9)]})
    detector, sub, metrics_port = live_detector([f"cam={server.url}"], head, "rc")
    stop, loop = run_in_thread(detector)

    def value(name: str, **labels: str) -> float:
        return metric(metrics_port, name, stream="cam", **labels)

    onsets = dict(type="onset", label="wave")
    try:
        wait_until(lambda: value("actstream_events_published_total", **onsets) >= 1, "onset")
        server.stop()
        wait_until(lambda: value("actstream_stream_reconnects_total") >= 1, "reconnecting")
        server = RtspServer("--source", "testsrc", port=port)
        wait_until(
            lambda: (
                value("actstream_stream_up") == 1
                and value("actstream_events_published_total", **onsets) >= 2
            ),
            "reconnected, with a new onset",
        )
        metrics = scrape(metrics_port)
    finally:
        shut_down(stop, loop, detector, server)
    received = drain(sub, snapshots=True)
    messages = live(received)
    sub.close()
    kinds = [(m["type"], m.get("state") or m.get("reason")) for m in messages]
    first_offset = kinds.index(("offset", "disconnected"))
    assert kinds[0] == ("status", "connected") and kinds[1] == ("onset", None)
    # the offset, then the evidence clip it closed (when one is cut), then the status
    after = [k for k in kinds[first_offset + 1 :] if k[0] != "clip"]
    assert after[0] == ("status", "disconnected")
    assert ("status", "reconnecting") in kinds[first_offset:]
    reconnected = kinds.index(("status", "connected"), first_offset)
    assert ("onset", None) in kinds[reconnected:]  # the new connection is a new timeline
    assert [m["seq"] for m in received] == list(range(len(received)))  # the snapshot first
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

    def cam(name: str) -> float:
        return metric(metrics_port, name, stream="cam")

    try:
        for _ in range(5):
            seen = cam("actstream_frames_processed_total")
            wait_until(
                lambda seen=seen: (
                    cam("actstream_stream_up") == 1
                    and cam("actstream_frames_processed_total") >= seen + 3
                ),
                "the camera connected and flowing",
            )
            server.proc.send_signal(signal.SIGKILL)  # killed mid-stream, no goodbye
            server.stop()
            before = scrape(metrics_port)[other]
            wait_until(lambda: cam("actstream_stream_up") == 0, "the camera seen down")
            # the other stream meanwhile: it keeps flowing while the camera is away
            wait_until(lambda b=before: scrape(metrics_port)[other] >= b + 4, "the other flowing")
            flowing.append(scrape(metrics_port)[other] - before)
            server = RtspServer("--source", "testsrc", port=port)
        wait_until(
            lambda: (
                cam("actstream_stream_up") == 1 and cam("actstream_stream_reconnects_total") >= 5
            ),
            "the camera back after 5 restarts",
        )
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
    assert min(flowing) >= 4, flowing
