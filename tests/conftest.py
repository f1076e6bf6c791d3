"""Shared fixtures: generated media, free loopback ports, a real RTSP server."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from benchmarks import rtsp
from tests.media import scene_frames, write_h264_mp4

ROOT = Path(__file__).resolve().parents[1]
CMD = [sys.executable, "-m", "training.cli"]  # what the `actstream` command runs

# Every bound on a wait in the suite is multiplied by this (a loaded or slow machine:
# ACTSTREAM_TEST_TIME_SCALE=3). Waits are on conditions; a bound only says when to give up.
TIME_SCALE = float(os.environ.get("ACTSTREAM_TEST_TIME_SCALE", "1") or 1)


def scaled(seconds: float) -> float:
    """A wait bound on this machine (`ACTSTREAM_TEST_TIME_SCALE`)."""
    return seconds * TIME_SCALE


def run_cli(*args: str, timeout: float = 60.0, **kw) -> subprocess.CompletedProcess:
    """`actstream ARGS...` from the repository root, output captured, bounded by
    `scaled(timeout)`."""
    return subprocess.run(
        [*CMD, *args], capture_output=True, text=True, timeout=scaled(timeout), cwd=ROOT, **kw
    )


def wait_until(condition, what: str, timeout_s: float = 20.0, every_s: float = 0.02):
    """Polls `condition()` until it returns something truthy (returned), for at most
    `scaled(timeout_s)`; then fails naming `what`."""
    deadline = time.monotonic() + scaled(timeout_s)
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"not {what} within {scaled(timeout_s):.0f} s")
        time.sleep(every_s)


def wait_for_frames(buf, items: list, n: int, timeout_s: float = 20.0) -> None:
    """Drains `buf` into `items` until it holds `n` frames (or the time is up; the caller
    checks what came)."""
    from stream.frames import Frame

    def enough() -> bool:
        items.extend(buf.get_many(1000))
        return sum(isinstance(i, Frame) for i in items) >= n

    deadline = time.monotonic() + scaled(timeout_s)
    while not enough() and time.monotonic() < deadline:
        time.sleep(0.02)


def _worker() -> bool:
    """True in a pytest-xdist worker (`make test` runs two): the session's cache belongs to
    the process that started them."""
    return "PYTEST_XDIST_WORKER" in os.environ


def pytest_configure(config):
    """Compiled engines go to a cache of this test session, not the user's (~/.cache); the
    xdist workers inherit it from the process that started them."""
    if not _worker() or "ACTSTREAM_CACHE_DIR" not in os.environ:
        os.environ["ACTSTREAM_CACHE_DIR"] = tempfile.mkdtemp(prefix="actstream-test-cache-")
    if _worker():
        # one math thread per worker (and its subprocesses): two workers with a thread per
        # core each would spin against each other (an 8 s test took 70 s beside the soak)
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(name, "1")
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def pytest_collection_modifyitems(config, items):
    """`gpu` tests run where torch sees a CUDA GPU and are skipped, with the reason, elsewhere.
    Modules holding a `slow` test go first (order kept otherwise), so the workers of a
    parallel run start on the long ones and finish together."""
    slow_modules = {item.module.__name__ for item in items if "slow" in item.keywords}
    items.sort(key=lambda item: item.module.__name__ not in slow_modules)
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    # ACTSTREAM_REQUIRE_TENSORRT=1: the TensorRT tests run anyway, and fail saying why
    required = os.environ.get("ACTSTREAM_REQUIRE_TENSORRT") == "1"
    for item in items:
        if "gpu" in item.keywords and not (required and "tensorrt" in item.name):
            item.add_marker(skip)


def pytest_unconfigure(config):
    if not _worker():
        shutil.rmtree(os.environ.get("ACTSTREAM_CACHE_DIR", ""), ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RtspServer(rtsp.RtspServer):
    """The shared RTSP server with its start-up wait scaled (`scaled`)."""

    def __init__(self, *args: str, ready_timeout_s: float = 20.0, **kw) -> None:
        super().__init__(*args, ready_timeout_s=scaled(ready_timeout_s), **kw)


@pytest.fixture
def rtsp_server():
    """Factory: `rtsp_server("--source", "file", "--file", path)` → a running `RtspServer`."""
    servers: list[RtspServer] = []

    def start(*args: str, **kw) -> RtspServer:
        server = RtspServer(*args, **kw)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def clip_mp4(media_dir) -> Path:
    """4 s of synthetic scene, 160x120 at 25 fps, H.264 in mp4 (GOP 1 s, no B-frames)."""
    return write_h264_mp4(media_dir / "clip.mp4", scene_frames(100, fps=25), fps=25)
