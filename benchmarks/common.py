"""What every benchmark shares: the environment record, timing statistics, and writing the
JSON result and its PNG."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from engine.cpu import cpu_features

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"


def environment() -> dict[str, Any]:
    """CPU (with its vector and matrix units)/GPU, library versions and the git commit the
    numbers belong to."""
    import av
    import torch
    import zmq

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_features": cpu_features(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "versions": {
            "torch": torch.__version__,
            "av": av.__version__,
            "numpy": np.__version__,
            "pyzmq": zmq.__version__,
        },
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain")),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    for name in ("onnxruntime", "tensorrt", "torch_tensorrt"):
        try:
            env["versions"][name] = __import__(name).__version__
        except ImportError:
            pass
    return env


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def stats_ms(seconds: list[float] | np.ndarray) -> dict[str, float]:
    """p50 / p90 / p99 / max / mean of durations given in seconds, in milliseconds."""
    a = np.asarray(seconds, dtype=np.float64) * 1e3
    if a.size == 0:
        raise ValueError("no samples")
    return {
        "p50": float(np.percentile(a, 50)),
        "p90": float(np.percentile(a, 90)),
        "p99": float(np.percentile(a, 99)),
        "max": float(a.max()),
        "mean": float(a.mean()),
        "n": int(a.size),
    }


def time_calls(fn: Callable[[], object], *, repeats: int, warmup: int = 3) -> list[float]:
    """Durations (s) of `repeats` calls of `fn` after `warmup` calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def save(name: str, result: dict[str, Any], out_dir: str | Path | None = None) -> Path:
    """Writes `<out_dir>/<name>.json` (default results/) with the environment added."""
    out = Path(out_dir) if out_dir else RESULTS
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(
        json.dumps({"benchmark": name, "environment": environment(), **result}, indent=2) + "\n"
    )
    return path


def figure(path: Path):
    """A matplotlib figure saved to `path` on close (Agg backend: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    class _Fig:
        def __enter__(self):
            self.fig, self.ax = plt.subplots(figsize=(7, 4.2), dpi=110)
            return self.fig, self.ax

        def __exit__(self, *exc):
            if exc[0] is None:
                self.fig.tight_layout()
                self.fig.savefig(path)
            plt.close(self.fig)

    return _Fig()
