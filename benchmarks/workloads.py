"""Workload profiles for the benchmarks: what the cameras send (resolution, frame rate, H.264
bitrate), camera-like video files made with PyAV, and the CPU each thread of this process
keeps busy.

* `synthetic`: `synthetic://` streams rendered by the readers at the model's input size;
* `substream`: 640 x 360 H.264 at 15 fps, 768 kbit/s (an IP camera's second stream);
* `fullhd`: 1920 x 1080 H.264 at 30 fps, 4 Mbit/s (a camera's main stream).

The camera files are the synthetic scenes rendered at a quarter of the width, scaled up and
given sensor-like noise on the luma plane so the encoder spends a camera's bitrate (an
upscaled drawing alone would encode to a few hundred kbit/s and decode unrealistically fast);
libx264 `veryfast`, main profile (CABAC, deblocking, as cameras send), no B-frames, an IDR
every 2 s. Files are cached under `~/.cache/actstream/benchmarks` (`ACTSTREAM_CACHE_DIR`).
"""

from __future__ import annotations

import os
import resource
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from engine.backends.cache_dir import cache_base
from stream.synthetic import SyntheticScene

MEDIA_VERSION = 1  # bump when the way files are made changes


@dataclass(frozen=True)
class Profile:
    name: str
    width: int | None  # None: rendered by the reader at the model's input size
    height: int | None
    fps: float
    bitrate: int | None = None

    @property
    def camera(self) -> bool:
        return self.width is not None


PROFILES = {
    "synthetic": Profile("synthetic", None, None, 10.0),
    "substream": Profile("substream", 640, 360, 15.0, 768_000),
    "fullhd": Profile("fullhd", 1920, 1080, 30.0, 4_000_000),
}


def media_dir() -> Path:
    return cache_base() / "benchmarks"


def camera_video(profile: Profile, seconds: float, folder: Path | None = None) -> Path:
    """An H.264 mp4 of `seconds` for a camera profile (made once, then reused)."""
    assert profile.camera and profile.width and profile.height and profile.bitrate
    folder = folder or media_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{profile.name}-{seconds:g}s-v{MEDIA_VERSION}.mp4"
    if path.exists():
        return path
    w, h, fps = profile.width, profile.height, int(profile.fps)
    scene = SyntheticScene(
        seed=5, width=max(64, w // 4), height=max(36, h // 4), num_actors=3, duration_s=seconds + 1
    )
    rng = np.random.default_rng(0)
    noise = [rng.integers(-5, 6, size=(h, w), dtype=np.int16) for _ in range(8)]
    kbit = profile.bitrate // 1000
    frames = int(seconds * fps)
    partial = path.with_suffix(".partial.mp4")
    started = last = time.monotonic()
    with av.open(str(partial), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.bit_rate = profile.bitrate
        stream.options = {
            "preset": "veryfast",
            "profile": "main",
            "x264-params": f"keyint={2 * fps}:min-keyint={2 * fps}:bframes=0:"
            f"vbv-maxrate={kbit}:vbv-bufsize={2 * kbit}",
        }
        for i in range(frames):
            small = av.VideoFrame.from_ndarray(scene.render(i / fps), format="rgb24")
            yuv = small.reformat(width=w, height=h, format="yuv420p").to_ndarray()
            yuv[:h] = np.clip(yuv[:h] + noise[i % len(noise)], 0, 255)
            for packet in stream.encode(av.VideoFrame.from_ndarray(yuv, format="yuv420p")):
                out.mux(packet)
            if time.monotonic() - last >= 5:
                last = time.monotonic()
                print(
                    f"  making {path.name}: {i + 1}/{frames} frames ({last - started:.0f} s)",
                    file=sys.stderr,
                    flush=True,
                )
        for packet in stream.encode():
            out.mux(packet)
    partial.rename(path)
    return path


def bitrate_of(path: Path) -> float:
    """Average bit/s of a video file."""
    with av.open(str(path)) as container:
        seconds = float(container.duration or 0) / av.time_base
    return path.stat().st_size * 8 / seconds if seconds else float("nan")


def _task_seconds(stat: Path) -> float:
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def process_cpu_s(pid: int) -> float:
    """CPU seconds a process has used (0 when it is gone)."""
    try:
        return _task_seconds(Path(f"/proc/{pid}/stat"))
    except (OSError, IndexError, ValueError):
        return 0.0


def reader_children(known: set[int]) -> list[int]:
    """Pids of this process's reader processes (`stream.readers: process`), those in `known`
    included while they are zombies (their command line is gone); new ones join `known`."""
    pids = []
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return pids
    for tid in tids:
        try:
            children = Path(f"/proc/self/task/{tid}/children").read_text().split()
        except OSError:
            continue
        for pid in map(int, children):
            try:
                if (
                    pid in known
                    or b"stream.reader_child" in Path(f"/proc/{pid}/cmdline").read_bytes()
                ):
                    known.add(pid)
                    pids.append(pid)
            except OSError:
                continue
    return pids


class StageCpu:
    """CPU seconds per pipeline stage of this process, by thread: `reader-*` threads (and
    reader processes, `stream.readers: process`) decode (or render), the `inference` thread
    runs the detector loop, threads Python does not know (the inference runtime's worker pool,
    FFmpeg's decoding threads, ZeroMQ's I/O: they carry no Python name to tell them apart)
    count as `native`, the rest as `other` (publisher, the benchmark's own). Linux only
    (`/proc/self/task`); elsewhere every stage reads 0."""

    STAGES = ("decode", "inference", "native", "other")

    def __init__(self) -> None:
        self._readers: set[int] = set()

    def sample(self) -> dict[int, tuple[str, float]]:
        """Each live thread's stage and CPU seconds so far, by thread id."""
        names = {t.native_id: t.name for t in threading.enumerate()}
        out: dict[int, tuple[str, float]] = {}
        try:
            tids = os.listdir("/proc/self/task")
        except OSError:
            return out
        for tid in map(int, tids):
            try:
                seconds = _task_seconds(Path(f"/proc/self/task/{tid}/stat"))
            except (OSError, IndexError, ValueError):
                continue  # the thread ended
            name = names.get(tid)
            if name is None:
                stage = "native"
            elif name.startswith("reader-"):
                stage = "decode"
            elif name == "inference":
                stage = "inference"
            else:
                stage = "other"
            out[tid] = (stage, seconds)
        for pid in reader_children(self._readers):  # negative keys: processes, not threads
            if (seconds := process_cpu_s(pid)) > 0:
                out[-pid] = ("decode", seconds)
        # children that ended and were waited for (reader processes of sources that ended)
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        out[0] = ("decode", usage.ru_utime + usage.ru_stime)
        return out

    @classmethod
    def cores(cls, before: dict, after: dict, wall_s: float) -> dict[str, float]:
        """Cores each stage kept busy between two samples (threads alive at the second; one
        started in between counts from zero; reader processes whether they ended or not)."""
        busy = dict.fromkeys(cls.STAGES, 0.0)
        for tid, (stage, seconds) in after.items():
            busy[stage] += seconds - before.get(tid, (stage, 0.0))[1]
        for pid, (stage, seconds) in before.items():
            if pid < 0 and pid not in after:  # a process that ended: its whole CPU is in key 0
                busy[stage] -= seconds
        return {k: round(v / wall_s, 3) for k, v in busy.items()}
