"""Building a real detector (real sources, publisher, metrics) around a small model, and a
head whose output the test fixes."""

from __future__ import annotations

import os
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass

from engine.backends.torch_backend import TorchBackend
from engine.build import build_detector
from engine.config import AppConfig, load_config
from engine.detector import Detector
from engine.metrics import Metrics
from engine.segmenter import Window
from engine.wire.subscriber import Subscriber
from models.action_model import build_model
from models.intervals import Interval
from stream.sources import parse_sources
from tests.conftest import CMD, ROOT, scaled, wait_until


def small_model(window_frames: int = 16) -> list[str]:
    """`--set` overrides for a model small enough for the tests (3 pyramid levels)."""
    return [
        "model.backbone.image_size=32",
        "model.backbone.channels=[8, 16]",
        "model.backbone.feature_dim=32",
        "model.temporal.dim=32",
        "model.temporal.num_layers=1",
        "model.temporal.num_lookback_heads=2",
        "model.temporal.lookback_frames=8",
        f"model.head.window_frames={window_frames}",
        "model.head.dim=32",
        "model.head.num_levels=3",
        "model.head.num_heads=2",
        "model.head.attn_window=5",
    ]


# A tracker that decides on the first sighting: the plumbing tests script exact head outputs
# and check exact event times (the decision policy has its own tests in test_tracker).
IMMEDIATE_TRACKER = [
    "tracker.onset_threshold=0.3",
    "tracker.keep_threshold=0.3",
    "tracker.confirm_runs=1",
    "tracker.offset_confirm_runs=1",
    "tracker.open_tolerance_frames=2",
]


def small_config(*overrides: str) -> AppConfig:
    return load_config(
        None, [*small_model(), *IMMEDIATE_TRACKER, "publisher.heartbeat_s=0.05", *overrides]
    )


@dataclass(frozen=True)
class ScriptedHead:
    """A perfect head: every action (start_s, end_s, label, score) of a stream, as seen by a
    window ending at `window.end_s` (clipped to it, visible once it has begun)."""

    actions: dict[str, list[tuple[float, float, str, float]]]

    def __call__(self, window: Window) -> list[Interval]:
        e = window.end_s
        return [
            Interval(max(s, window.start_s), min(x, e), label, score)
            for s, x, label, score in self.actions.get(window.stream_id, [])
            if s < e - 0.05 and x > window.start_s
        ]


def make_detector(
    sources: list[str], config: AppConfig, head, *, run_id: str = "test", metrics: bool = False
) -> Detector:
    """A detector with a started publisher on a free loopback port."""
    detector = build_detector(
        parse_sources(sources),
        config,
        TorchBackend(build_model(config.model)),
        run_id=run_id,
        segmenter=head,
        metrics=Metrics() if metrics else None,
        endpoint="tcp://127.0.0.1:*",
    )
    detector.publisher.start()
    return detector


def connect_subscriber(endpoint: str, timeout_s: float = 10.0) -> Subscriber:
    """A subscriber that has provably joined (it received a heartbeat); what it received
    before that heartbeat (the snapshot a joining subscriber gets) is in `sub.on_join`."""
    sub = Subscriber(endpoint)
    sub.on_join = []
    deadline = time.monotonic() + scaled(timeout_s)
    while time.monotonic() < deadline:
        item = sub.receive(0.2)
        if item is not None and item[1]["type"] != "heartbeat":
            sub.on_join.append(item[1])
        if item is not None and item[1]["type"] == "heartbeat":
            return sub
    sub.close()
    raise AssertionError(f"no heartbeat from {endpoint} within {scaled(timeout_s)} s")


def drain(
    sub: Subscriber, *, idle_s: float = 0.5, limit_s: float = 20.0, snapshots: bool = False
) -> list[dict]:
    """Every live message until none arrives for `idle_s` (heartbeats excluded, and the
    snapshot a joining subscriber gets unless `snapshots`: then also what
    `connect_subscriber` received before its heartbeat, first)."""
    out = list(getattr(sub, "on_join", [])) if snapshots else []
    deadline = time.monotonic() + scaled(limit_s)
    while time.monotonic() < deadline:
        item = sub.receive(scaled(idle_s))
        if item is None:
            break
        if item[1]["type"] != "heartbeat" and (snapshots or not item[1].get("snapshot")):
            out.append(item[1])
    return out


def live(messages: list[dict]) -> list[dict]:
    """The messages that are news (not a joining subscriber's snapshot)."""
    return [m for m in messages if not m.get("snapshot")]


def run_in_thread(detector: Detector, duration_s: float | None = None):
    stop = threading.Event()
    thread = threading.Thread(target=detector.run, args=(stop,), kwargs={"duration_s": duration_s})
    thread.start()
    return stop, thread


def metric(port: int, name: str, **labels: str) -> float:
    """One sample of /metrics (0 when the series does not exist yet)."""
    return scrape(port).get((name, tuple(sorted(labels.items()))), 0.0)


def wait_for_events(port: int, streams, type: str, label: str, what: str) -> None:
    """Waits until every stream of `streams` has published an event of `type` and `label`
    (by the detector's metrics on `port`)."""
    wanted = dict(type=type, label=label)
    wait_until(
        lambda: all(
            metric(port, "actstream_events_published_total", stream=sid, **wanted) >= 1
            for sid in streams
        ),
        what,
    )


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """GET /metrics → {(name, sorted label items): value}."""
    text = (
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=scaled(5))
        .read()
        .decode()
    )
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_labels, value = line.rsplit(" ", 1)
        if "{" in name_labels:
            name, labels = name_labels.split("{", 1)
            items = tuple(
                sorted(
                    tuple(kv.split("=", 1))
                    for kv in labels.rstrip("}").replace('"', "").split(",")
                    if kv
                )
            )
        else:
            name, items = name_labels, ()
        out[(name, items)] = float(value)
    return out


class Running:
    """`actstream run ...` in a subprocess, its stdout lines collected by a thread."""

    def __init__(self, *args: str, env: dict | None = None) -> None:
        self.proc = subprocess.Popen(
            [*CMD, "run", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def topics(self) -> list[str]:
        return [line.split(" ", 1)[0] for line in list(self.lines)]

    def wait_until(self, done, what: str, timeout_s: float = 60.0) -> None:
        """Waits for `done()` while the process runs (fails if it exits first)."""
        deadline = time.monotonic() + scaled(timeout_s)
        while time.monotonic() < deadline and self.proc.poll() is None:
            if done():
                return
            time.sleep(0.02)
        raise AssertionError(f"not {what} within {scaled(timeout_s)} s; rc {self.proc.poll()}")

    def stop(self, sig: int) -> tuple[int, str, float]:
        """Sends `sig`; (exit status, stderr, seconds until the process was gone)."""
        t0 = time.monotonic()
        self.proc.send_signal(sig)
        try:
            self.proc.wait(scaled(30))
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        elapsed = time.monotonic() - t0
        self._reader.join(scaled(5))
        return self.proc.returncode, self.proc.stderr.read(), elapsed
