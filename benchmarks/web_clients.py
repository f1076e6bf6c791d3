"""What watching costs the detector: p99 frame-to-event latency of a `--streams` (16) stream
detector with and without `--clients` (5) web-view clients, in one process, rounds
alternating.

    python -m benchmarks.web_clients [--streams 16] [--clients 5] [--kind http|browser]
                                     [--width 320] [--fps 2] [--duration-s 30] [--rounds 2]

Each client does what the page does: the Server-Sent Events feed (/api/live) and every
stream's MJPEG frames (`--width` px, `--fps` a second), read as they come. `--kind http`
(default): the clients are asyncio connections in another process — the server's cost, as
when browsers run on the viewers' machines; `--kind browser`: as many pages of a headless
Chromium (Debian's /usr/bin/chromium) — on this machine their rendering also competes for
the detector's cores. One more client connects and never reads: the detector must drop it
and go on. Reports each run's p99 and the ratio of the medians (with / without).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import statistics
import sys
import time
import urllib.request

from benchmarks.common import figure, save, stats_ms
from benchmarks.end_to_end import add_run_args, run_with

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]  # fmt: skip


async def _read_forever(host: str, port: int, path: str, counts: list[int], k: int) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    await writer.drain()
    while chunk := await reader.read(65536):
        counts[k] += len(chunk)


async def _stuck(host: str, port: int, path: str) -> None:
    """Asks for frames and never reads them (a tiny receive window: the server notices)."""
    import socket

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, port))
    await asyncio.get_running_loop().sock_sendall(
        sock, f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    )
    await asyncio.sleep(3600)


def _http_clients(port: int, streams: list[str], clients: int, width: int, fps: float,
                  ready, conn, feeds: str = "both") -> None:  # fmt: skip
    async def main() -> None:
        counts = [0] * clients
        tasks = [asyncio.ensure_future(_stuck("127.0.0.1", port,
                 f"/api/streams/{streams[0]}/live.mjpeg?width=1920&fps=30"))]  # fmt: skip
        for k in range(clients):
            if feeds != "frames":
                feed = _read_forever("127.0.0.1", port, "/api/live", counts, k)
                tasks.append(asyncio.ensure_future(feed))
            for sid in streams if feeds != "events" else ():
                path = f"/api/streams/{sid}/live.mjpeg?width={width}&fps={fps:g}"
                tasks.append(asyncio.ensure_future(_read_forever("127.0.0.1", port, path,
                                                                 counts, k)))  # fmt: skip
        ready.set()
        while not conn.poll():
            await asyncio.sleep(0.2)
        conn.send(counts)
        for t in tasks:
            t.cancel()

    asyncio.run(main())


def _browser_clients(port: int, streams: list[str], clients: int, width: int, fps: float,
                     ready, conn, _feeds: str = "both") -> None:  # fmt: skip
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        pages = []
        for _ in range(clients):
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"http://127.0.0.1:{port}/")
            page.select_option("#fps", str(int(fps)))
            pages.append(page)
        ready.set()
        while not conn.poll(0.5):
            for page in pages:
                page.wait_for_timeout(50)
        conn.send([0] * clients)
        browser.close()


def _cpu_seconds(stat: str) -> float:
    """User + system CPU seconds so far of the process or thread whose /proc stat file this
    is (Linux); 0 when it is gone."""
    import os

    try:
        fields = open(stat).read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Watchers:
    """The web view on a benchmark's detector, with clients in another process."""

    def __init__(self, args: argparse.Namespace, clients: int) -> None:
        from stream.preview import Previews

        self.args, self.clients = args, clients
        self.previews = Previews()
        self.hub = None
        self.result: dict = {}

    def on_sent(self, topic: str, payload: bytes, message: object) -> None:
        if self.hub is not None:
            self.hub.on_sent(topic, payload, message)

    def serve(self, detector, metrics):
        from engine.api import ApiServer
        from engine.api.app import DetectorView, build_app

        pub = detector.publisher
        view = DetectorView(pub.current, pub.is_alive, metrics.registry,
                            previews=self.previews, clock=detector.clock)  # fmt: skip
        app = build_app(None, view, None)
        self.hub = app.state.hub
        server = ApiServer(app, "127.0.0.1", 0)
        port = server.start()
        t0 = time.monotonic()

        def own_cost() -> dict:
            minutes = max(time.monotonic() - t0, 1e-6) / 60
            return {
                "server_thread_cpu_s_per_min": _cpu_seconds(
                    f"/proc/self/task/{server.native_id}/stat"
                )
                / minutes,
                "preview_encode_cpu_s_per_min": self.previews.encode_cpu_s / minutes,
            }

        if not self.clients:

            def close_idle() -> None:
                self.result = own_cost()
                server.close()

            return close_idle
        streams = list(detector.streams)
        target = _browser_clients if self.args.kind == "browser" else _http_clients
        ctx = mp.get_context("spawn")
        ready = ctx.Event()
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=target, args=(port, streams, self.clients, self.args.width,
                                                self.args.fps_view, ready, child,
                                                self.args.feeds))  # fmt: skip
        proc.start()
        if not ready.wait(120):
            proc.kill()
            raise RuntimeError("the web clients did not start within 120 s")

        def close() -> None:
            status = json.loads(
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=10).read()
            )
            cpu_s = _cpu_seconds(f"/proc/{proc.pid}/stat")
            cost = own_cost()
            parent.send("stop")
            counts = parent.recv() if parent.poll(30) else []
            proc.join(30)
            if proc.is_alive():
                proc.kill()
            server.close()
            self.result = {
                "bytes_per_client": counts,
                "client_process_cpu_s": cpu_s,
                **cost,
                "pages_dropped": status["live_dropped"],
                "live_clients_at_end": status["live_clients"],
            }

        return close


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.web_clients",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--clients", type=int, default=5)
    parser.add_argument("--kind", choices=["http", "browser"], default="http")
    parser.add_argument("--width", type=int, default=320, help="live frame width asked for")
    parser.add_argument("--fps-view", type=float, default=2.0, help="live frames a second")
    parser.add_argument("--rounds", type=int, default=2, help="runs without and with clients")
    parser.add_argument("--feeds", choices=["both", "events", "frames"], default="both",
                        help="http clients: what each reads (default both)")  # fmt: skip
    add_run_args(parser)
    parser.set_defaults(duration_s=30.0)
    args = parser.parse_args(argv)
    warm = argparse.Namespace(**{**vars(args), "duration_s": 5.0})
    run_with(warm, args.streams)  # the engine's export and first calls: not measured
    runs = []
    for i in range(2 * args.rounds):
        clients = args.clients if i % 2 else 0
        watchers = Watchers(args, clients)
        t0 = time.monotonic()
        r = run_with(args, args.streams, watchers.on_sent, previews=watchers.previews,
                     serve=watchers.serve)  # fmt: skip
        f2e = stats_ms(r["_f2e"]) if r["_f2e"] else {}
        p99 = f2e.get("p99")
        runs.append({"clients": clients, "p99_ms": p99, "frame_to_event_ms": f2e,
                     "events": len(r["_f2e"]), "frames_processed": r["frames_processed"],
                     "frames_expected": r["frames_expected"], "wall_s": time.monotonic() - t0,
                     **watchers.result})  # fmt: skip
        print(f"run {i + 1}: {clients} client(s): frame-to-event p50 {f2e['p50']:.1f} / p99 "
              f"{p99:.1f} ms over {len(r['_f2e'])} events, "
              f"{r['frames_processed']}/{r['frames_expected']} frames"
              + (f", {watchers.result.get('pages_dropped')} stalled client(s) dropped, the "
                 f"clients' process {watchers.result.get('client_process_cpu_s', 0):.1f} CPU s"
                 if clients else "")
              + f"; web server thread {watchers.result['server_thread_cpu_s_per_min']:.2f} + "
                f"preview encoding {watchers.result['preview_encode_cpu_s_per_min']:.2f} CPU s "
                "per minute", flush=True)  # fmt: skip
    without = statistics.median(r["p99_ms"] for r in runs if not r["clients"])
    with_ = statistics.median(r["p99_ms"] for r in runs if r["clients"])
    result = {"streams": args.streams, "clients": args.clients, "kind": args.kind,
              "width": args.width, "fps_view": args.fps_view, "runs": runs,
              "p99_ratio": with_ / without}  # fmt: skip
    print(f"{args.clients} {args.kind} client(s) on {args.streams} streams: p99 frame-to-event "
          f"with / without = {with_:.1f} / {without:.1f} ms = {with_ / without:.3f}")  # fmt: skip
    path = save(f"web_clients_{args.kind}", result, args.out)
    with figure(path.with_suffix(".png")) as (fig, ax):
        ax.barh([f"{i + 1}: {r['clients']} clients" for i, r in enumerate(runs)],
                [r["p99_ms"] for r in runs])  # fmt: skip
        ax.set_xlabel("p99 frame-to-event latency (ms)")
        ax.set_title(f"Web view clients ({args.kind}) on {args.streams} streams")
    print(f"wrote {path} and {path.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
