"""A real RTSP server (GStreamer's gst-rtsp-server, `tests/rtsp_server.py`) in a subprocess of
the system Python, for the tests and the workload benchmarks."""

from __future__ import annotations

import os
import select
import signal
import subprocess
from pathlib import Path

SERVER_SCRIPT = Path(__file__).resolve().parents[1] / "tests" / "rtsp_server.py"
SYSTEM_PYTHON = "/usr/bin/python3"


class RtspServer:
    """Started on construction (`url` once it listens on 127.0.0.1); stopped by `stop()`.

    `args` go to the server script: `--source file --file PATH` serves an H.264 mp4 without
    re-encoding, from its first frame for every client; `--source testsrc` a live pattern."""

    def __init__(self, *args: str, port: int = 0, ready_timeout_s: float = 20.0) -> None:
        self.proc = subprocess.Popen(
            [SYSTEM_PYTHON, str(SERVER_SCRIPT), "--port", str(port), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        ready, _, _ = select.select([self.proc.stdout], [], [], ready_timeout_s)
        line = self.proc.stdout.readline() if ready else ""
        if not line.startswith("READY "):
            self.stop()
            raise RuntimeError(f"RTSP server did not start: {line.strip()!r}")
        self.url = line.split()[1]
        self.port = int(self.url.split(":")[2].split("/")[0])

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()

    def __enter__(self) -> RtspServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
