"""The web view in a real headless Chromium (Debian's, driven by Playwright) against a real
detector on two streams — an RTSP camera (GStreamer's server) and a synthetic scene: both
live images change, an open action shows on the live view within 1 s of its onset on ZeroMQ
and leaves within 1 s of its offset, timeline bars span the events' times, a click plays the
clip, a stopped camera shows `reconnecting` within 2 × stream.timeout_s, and the browser logs
no error. Bad ids and queries get 404 / 400 JSON; a token guards a non-loopback page.
Screenshots go to runs/test-artifacts/web/."""

import json
import signal
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest

from engine.wire.subscriber import Subscriber
from tests.conftest import ROOT, free_port, scaled, wait_until
from tests.integration.helpers import Running
from tests.integration.test_store import get, up

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
# As root, without a sandbox; no background connections (this machine's network is closed).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = ROOT / "runs" / "test-artifacts" / "web"
TIMEOUT_S = 2.0  # stream.timeout_s of the detector under test


class Heard:
    """Every message a real ZeroMQ subscriber receives, with its arrival time."""

    def __init__(self, endpoint: str) -> None:
        self.sub = Subscriber(endpoint)
        self.got: list[tuple[float, dict]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            item = self.sub.receive(0.1)
            if item is not None:
                self.got.append((time.time(), item[1]))

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sub.close()

    def of(self, type_: str) -> dict[str, tuple[float, dict]]:
        return {
            m["event_id"]: (t, m)
            for t, m in list(self.got)
            if m["type"] == type_ and not m.get("snapshot")
        }


@pytest.fixture(scope="module")
def detector(tmp_path_factory, request):
    from tests.conftest import RtspServer

    tmp = tmp_path_factory.mktemp("web")
    camera = RtspServer("--source", "testsrc", "--width", "320", "--height", "240", "--fps", "10")
    port, zmq_port = free_port(), free_port()
    endpoint = f"tcp://127.0.0.1:{zmq_port}"
    run = Running(
        "--config", "configs/demo.yaml", f"cam={camera.url}", "syn=synthetic://?seed=3",
        "--no-metrics", "--quiet", "--zmq", endpoint, "--store", str(tmp / "events.db"),
        "--clips", str(tmp / "clips"), "--http-port", str(port),
        "--set", f"stream.timeout_s={TIMEOUT_S}", "--set", "clips.post_s=0.5",
        "--set", "clips.pre_s=1",
    )  # fmt: skip
    try:
        run.wait_until(lambda: up(port), "the API up", 60)
        heard = Heard(endpoint)
        yield run, camera, port, heard
        heard.close()
    finally:
        run.stop(signal.SIGINT)
        camera.stop()


def test_bad_ids_and_queries_get_404_and_400_json(detector):
    _run, _camera, port, _heard = detector
    for path in ("/api/streams/nope", "/api/streams/nope/live.mjpeg", "/api/streams/nope/truth",
                 "/api/events/nope", "/api/events/nope/clip.mp4", "/static/nope.js"):  # fmt: skip
        code, body = get(port, path)
        assert code == 404 and "nope" in body["detail"], (path, code, body)
    for path in (
        "/api/events?limit=abc",
        "/api/events?limit=0",
        "/api/events?since=yesterday",
        "/api/streams/syn/live.mjpeg?width=99999",
        "/api/streams/syn/live.mjpeg?fps=-1",
        "/api/streams/syn/truth?since_s=x",
        "/api/events?label=" + "x" * 5000,
    ):
        code, body = get(port, path)
        assert code == 400 and body["detail"], (path, code, body)
    stages = {"backbone", "temporal", "head", "track"}
    status = wait_until(
        lambda: (s := get(port, "/api/status")[1]) and set(s["stages_ms"]) >= stages and s,
        "every stage timed",
    )
    assert status["backend"].startswith("onnxruntime") and status["ok"]
    assert all(p50 is not None and p99 >= p50 for p50, p99 in status["stages_ms"].values())


def test_a_client_that_stops_reading_is_dropped_and_the_detector_goes_on(detector):
    _run, _camera, port, heard = detector
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)  # a window that fills fast
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"GET /api/streams/cam/live.mjpeg?width=1920&fps=30 HTTP/1.1\r\n"
                 b"Host: 127.0.0.1\r\n\r\n")  # fmt: skip
    try:
        before = len(heard.got)
        wait_until(lambda: get(port, "/api/status")[1]["live_dropped"] >= 1,
                   "the stalled client dropped", 60, 0.2)  # fmt: skip
        # meanwhile the detector went on: frames processed at the stream's rate, news sent
        streams = {s["stream"]: s for s in get(port, "/api/streams")[1]}
        assert streams["cam"]["fps"] > 5 and streams["syn"]["fps"] > 5, streams
        assert len(heard.got) > before
        sock.settimeout(scaled(10))
        with pytest.raises(ConnectionResetError):  # the server reset it
            while sock.recv(65536):
                pass
    finally:
        sock.close()


def test_the_page_shows_live_streams_open_actions_timeline_clips_and_reconnecting(detector):
    from playwright.sync_api import sync_playwright

    run, camera, port, heard = detector
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: m.type in ("error", "warning") and problems.append(
                f"console {m.type}: {m.text}"))  # fmt: skip
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.goto(f"http://127.0.0.1:{port}/")
            # Every onset tag that appears on the live view, and when it goes (browser clock).
            page.evaluate("""() => {
                window.seen = {};
                new MutationObserver((records) => {
                  const t = Date.now() / 1000;
                  for (const r of records) {
                    for (const n of r.addedNodes)
                      if (n.dataset && n.dataset.eventId)
                        window.seen[n.dataset.eventId] = {added: t};
                    for (const n of r.removedNodes)
                      if (n.dataset && n.dataset.eventId && window.seen[n.dataset.eventId])
                        window.seen[n.dataset.eventId].removed = t;
                  }
                }).observe(document.getElementById('live'), {childList: true, subtree: true});
            }""")
            ms = int(scaled(30) * 1000)
            page.wait_for_function(
                """() => [...document.querySelectorAll('.card img')]
                     .filter(i => i.naturalWidth > 0).length == 2""",
                timeout=ms,
            )
            page.screenshot(path=str(ARTIFACTS / "page.png"), full_page=True)
            for sid in ("cam", "syn"):  # the live images change
                img = page.locator(f'.card[data-stream="{sid}"] img')
                first = img.screenshot(path=str(ARTIFACTS / f"live_{sid}_1.png"))
                wait_until(lambda img=img, first=first: img.screenshot() != first,
                           f"{sid}'s live image changing", 15, every_s=0.3)  # fmt: skip
                img.screenshot(path=str(ARTIFACTS / f"live_{sid}_2.png"))

            # Onsets and offsets heard on ZeroMQ after the page was watching, on the live view.
            joined = time.time() + 0.5

            def settled() -> list[str]:
                onsets, offsets = heard.of("onset"), heard.of("offset")
                return [
                    e
                    for e, (t, _m) in onsets.items()
                    if t > joined and e in offsets and offsets[e][0] < time.time() - 1.5
                ]

            wait_until(lambda: len(settled()) >= 3, "three actions opened and closed", 90, 0.2)
            seen = page.evaluate("window.seen")
            onsets, offsets = heard.of("onset"), heard.of("offset")
            for eid in settled():
                assert eid in seen and "removed" in seen[eid], (eid, seen.get(eid))
                assert abs(seen[eid]["added"] - onsets[eid][0]) <= 1.0, (eid, seen[eid])
                assert abs(seen[eid]["removed"] - offsets[eid][0]) <= 1.0, (eid, seen[eid])

            # Timeline bars: their times are the events', their width their duration.
            page.select_option("#f-range", "300")
            for eid in settled():
                offset = offsets[eid][1]
                bar = page.locator(f'.ev[data-event-id="{eid}"]')
                bar.wait_for(timeout=ms)
                assert float(bar.get_attribute("data-start-wall")) == pytest.approx(
                    offset["start_wall_s"], abs=1e-3
                )
                assert float(bar.get_attribute("data-end-wall")) == pytest.approx(
                    offset["end_wall_s"], abs=1e-3
                )
                box = bar.bounding_box()
                track = bar.locator("xpath=..").bounding_box()
                assert box["width"] == pytest.approx(  # (a bar is 3 px at least)
                    max(3.0, offset["duration_s"] / 300 * track["width"]), abs=1.5
                )
            overlaps = page.evaluate("""() =>
              [...document.querySelectorAll('.track')].flatMap(t => {
                const r = [...t.querySelectorAll('.ev')].map(b => b.getBoundingClientRect());
                return r.flatMap((a, i) => r.slice(i + 1).filter(b => a.left < b.right - 1
                  && b.left < a.right - 1 && a.top < b.bottom - 1 && b.top < a.bottom - 1));
            }).length""")
            assert overlaps == 0, "bars of actions at the same time get lanes of their own"
            page.screenshot(path=str(ARTIFACTS / "timeline.png"), full_page=True)

            # A click on an action whose clip is written plays it in the page.
            def clipped() -> str | None:
                clips = heard.of("clip")
                return next((e for e in settled() if e in clips), None)

            eid = wait_until(clipped, "a clip of one of those actions", 60, 0.2)
            page.locator(f'.ev[data-event-id="{eid}"]').click()
            page.wait_for_function(
                """() => { const v = document.getElementById('d-clip');
                           return !v.hidden && v.readyState >= 2 && v.currentTime > 0.2
                                  && !v.error; }""",
                timeout=ms,
            )
            assert page.locator("#d-snapshot").evaluate("i => i.naturalWidth") > 0
            page.screenshot(path=str(ARTIFACTS / "clip.png"), full_page=True)

            # The camera stops: its card says reconnecting within 2 x stream.timeout_s.
            camera.stop()
            stopped = time.monotonic()
            page.wait_for_function(
                """() => document.querySelector('.card[data-stream="cam"]')
                         .dataset.state === 'reconnecting'""",
                timeout=int(scaled(2 * TIMEOUT_S + 5) * 1000),
            )
            took = time.monotonic() - stopped
            page.screenshot(path=str(ARTIFACTS / "reconnecting.png"), full_page=True)
            assert took <= scaled(2 * TIMEOUT_S) + 0.5, took
            assert run.proc.poll() is None
        finally:
            browser.close()
    assert not problems, problems


def test_a_token_guards_every_request_but_healthz_and_the_page_keeps_it(tmp_path):
    port = free_port()
    token = "s3cret-t0ken"
    run = Running(
        "--config", "configs/demo.yaml", "synthetic://?seed=1", "--no-metrics", "--quiet",
        "--no-store", "--no-clips", "--zmq", f"tcp://127.0.0.1:{free_port()}",
        "--http-port", str(port), "--set", f"http.token={token}",
    )  # fmt: skip
    try:
        run.wait_until(lambda: up(port), "the API up", 60)
        assert get(port, "/api/streams")[0] == 401
        assert get(port, f"/api/streams?token=wrong-{token}")[0] == 401
        assert get(port, f"/api/streams?token={token}")[0] == 200
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/status", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(req, timeout=scaled(5)) as r:
            assert r.status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/?token={token}",
                                    timeout=scaled(5)) as r:  # fmt: skip
            cookie = r.headers["set-cookie"].split(";", 1)[0]
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/static/app.js", headers={"Cookie": cookie}
        )
        with urllib.request.urlopen(req, timeout=scaled(5)) as r:
            assert r.status == 200
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=scaled(5))
            raise AssertionError("the page without a token")
        except urllib.error.HTTPError as exc:
            assert exc.code == 401 and "token" in json.loads(exc.read())["detail"]
    finally:
        run.stop(signal.SIGINT)
    wait_until(lambda: run.proc.poll() is not None, "the detector gone")
