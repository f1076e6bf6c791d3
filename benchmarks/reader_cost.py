"""What reading costs without a model: N readers of one camera-like RTSP stream, as threads and
as processes (`stream.readers`), in one run: frames delivered per second, cores busy and CPU
per delivered frame (decoding, resizing and, for processes, the hand-over through shared
memory).

    python -m benchmarks.reader_cost [--profile substream] [--streams 16] [--seconds 15]
"""

from __future__ import annotations

import argparse
import sys
import time

from benchmarks.common import RESULTS, figure, save
from benchmarks.rtsp import RtspServer
from benchmarks.workloads import PROFILES, StageCpu, camera_video
from stream.buffer import DropPolicy, FrameBuffer
from stream.frames import Frame
from stream.reader import StreamReader
from stream.reader_process import ReaderProcess
from stream.settings import ReaderOptions
from stream.sources import parse_source


def measure(kind: str, url: str, streams: int, seconds: float, size: int) -> dict:
    """`streams` readers of `url` for `seconds` after their first frames (and 3 s more)."""
    reader_type = StreamReader if kind == "thread" else ReaderProcess
    options = ReaderOptions(width=size, height=size, fps=10.0)
    buffers, readers = [], []
    for i in range(streams):
        buffer = FrameBuffer(64, DropPolicy.DROP_OLDEST, is_frame=lambda x: isinstance(x, Frame))
        reader = reader_type(parse_source(url, f"s{i}"), buffer, options)
        reader.start()
        buffers.append(buffer)
        readers.append(reader)
    try:
        for reader in readers:
            reader.first_open_done.wait(30)
        time.sleep(min(3.0, seconds))  # every reader past its first frames
        cpu = StageCpu()
        for buffer in buffers:
            buffer.get_many(1000)
        before, t0, frames = cpu.sample(), time.monotonic(), 0
        while time.monotonic() - t0 < seconds:
            for buffer in buffers:
                frames += sum(isinstance(x, Frame) for x in buffer.get_many(1000))
            time.sleep(0.05)
        after, wall = cpu.sample(), time.monotonic() - t0
    finally:
        for reader in readers:
            reader.stop()
        for reader in readers:
            reader.join(3.0)
    cores = StageCpu.cores(before, after, wall)
    busy = sum(cores.values())
    # reader processes apart from this process's threads (negative keys and 0: processes)
    children = StageCpu.cores(
        {k: v for k, v in before.items() if k <= 0},
        {k: v for k, v in after.items() if k <= 0},
        wall,
    )["decode"]
    return {
        "readers": kind,
        "streams": streams,
        "frames_per_s": round(frames / wall, 1),
        "cores": cores,
        "reader_process_cores": children,
        "cpu_ms_per_frame": round(1e3 * busy * wall / max(frames, 1), 3),
        "dropped": sum(b.dropped for b in buffers),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reader_cost", description=__doc__)
    parser.add_argument("--profile", default="substream", choices=["substream", "fullhd"])
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--size", type=int, default=64, help="frame side the readers resize to")
    parser.add_argument("--video-s", type=float, default=60.0, help="length of the served file")
    parser.add_argument("--out", default=str(RESULTS), help="results folder (default results/)")
    args = parser.parse_args(argv)
    video = camera_video(PROFILES[args.profile], args.video_s)
    server = RtspServer("--source", "file", "--file", str(video))
    try:
        rows = [
            measure(kind, server.url, args.streams, args.seconds, args.size)
            for kind in ("thread", "process")
        ]
    finally:
        server.stop()
    print(f"{args.streams} readers of {args.profile} through RTSP, {args.seconds:g} s each")
    print(
        f"{'readers':<8} {'frames/s':>9} {'cores':>6} {'in children':>12} {'CPU ms/frame':>13} "
        f"{'dropped':>8}"
    )
    for r in rows:
        cores = sum(r["cores"].values())
        print(
            f"{r['readers']:<8} {r['frames_per_s']:>9.1f} {cores:>6.2f} "
            f"{r['reader_process_cores']:>12.2f} {r['cpu_ms_per_frame']:>13.3f} {r['dropped']:>8}"
        )
    ratio = rows[1]["cpu_ms_per_frame"] / rows[0]["cpu_ms_per_frame"]
    print(f"process / thread CPU per frame: {ratio:.2f}")
    path = save("reader_cost", {"profile": args.profile, "rows": rows, "ratio": ratio}, args.out)
    with figure(path.with_suffix(".png")) as (_, ax):
        ax.bar([r["readers"] for r in rows], [r["cpu_ms_per_frame"] for r in rows])
        ax.set_ylabel("CPU ms per delivered frame")
        ax.set_title(f"{args.streams} readers of {args.profile} through RTSP")
    print(f"wrote {path} and {path.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
