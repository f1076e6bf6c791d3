"""Workload profiles x backbones x engines: decode-only, model-only and end-to-end frames/s in
one run, live capacity through a real RTSP server, latency at half capacity, and the CPU each
stage keeps busy.

For each profile (`benchmarks.workloads`: synthetic, substream 640x360@15, fullhd 1080p@30),
backbone (the bundled CNN; ResNet-18-, ResNet-50-class and DINOv2-small at 224 x 224 through
the Hugging Face path with random weights, as `benchmarks.cpu_precisions` builds them) and
engine (backend:precision, compiled and checked as `actstream compile` does):

* decode-only: the camera file (the bytes the RTSP server sends) decoded, sampled to the
  model's 10 fps and resized exactly as a reader does, one thread per stream, unpaced;
* model-only: the detector's loop over those frames already in memory;
* end to end: the detector on the files with its reader threads, unpaced (`--fast`);
  efficiency = end to end / min(decode-only, model-only);
* capacity: the most live streams held in real time through the RTSP server (or live
  `synthetic://` streams): every frame of the model's rate processed, none dropped and no
  reconnect for `--duration-s` (a minute by default), after `--warmup-s`. The search starts
  at 0.9 x end-to-end / 10 fps, brackets by steps that double, then bisects; a trial stops
  at its first dropped frame;
* latency at half capacity: frame-to-decision latency (decode of a head run's newest frame
  -> the end of its decision; every event of that run is published right after, so it is
  the frame-to-event latency whether or not random weights publish events) p50 / p99;
* CPU: cores kept busy by the readers, the inference thread, the threads Python does not
  name (the runtime's worker pool and FFmpeg's decoding threads: `native`) and
  the RTSP server process, in the end-to-end and the capacity runs.

    python -m benchmarks.profiles [--profiles synthetic substream fullhd]
        [--backbones builtin resnet18 resnet50 dinov2-small]
        [--engines onnxruntime:fp32 openvino:int8] [--duration-s 60] [--phase-s 15]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS, figure, save
from benchmarks.cpu_precisions import BACKBONES, DEMO, model_for
from benchmarks.phases import capacity, end_to_end, engine_backend, live_trial, model_only
from benchmarks.pipeline_efficiency import CpuUse, decode_only
from benchmarks.rtsp import RtspServer
from benchmarks.workloads import (
    PROFILES,
    Profile,
    bitrate_of,
    camera_video,
)
from engine.checkpoint import load_checkpoint
from stream.settings import ReaderOptions, StreamConfig
from stream.sources import parse_sources


def one_workload(profile: Profile, kind: str, engine: str, args, tmp: Path, base) -> dict:
    model, config = model_for(kind, base, tmp)
    backend = engine_backend(
        model, config, engine, tmp / f"{kind}-{engine.replace(':', '-')}", args.threads
    )
    fps, size = config.fps, config.backbone.image_size
    row: dict = {
        "profile": profile.name,
        "backbone": kind,
        "engine": engine,
        "backend": backend.describe(),
        "model_fps": fps,
        "readers": args.readers,
    }
    streams = args.streams
    if profile.camera:
        video = camera_video(profile, args.duration_s + args.warmup_s + 15)
        row["video"] = {"file": video.name, "bitrate_kbit_s": round(bitrate_of(video) / 1e3)}
        files = [str(video)] * streams
    else:
        files = [
            f"synthetic://?seed={100 + i}&fps={fps:g}&duration_s={args.phase_s:g}"
            for i in range(streams)
        ]
    options = ReaderOptions(width=size, height=size, fps=fps, stream=StreamConfig(realtime=False))
    specs = parse_sources([f"s{i}={f}" for i, f in enumerate(files)])
    with CpuUse() as decode_cpu:
        decoded, decode_s = decode_only(specs, options)
    frames = sum(len(f) for f in decoded)
    row["decode_only_fps"] = round(frames / decode_s, 1)
    row["decode_only_cores"] = round(decode_cpu.cores, 2)
    row["model_only_fps"] = round(model_only(decoded, backend, config, args.phase_s), 1)
    del decoded
    e2e = end_to_end(files, backend, config, args.phase_s, args.readers)
    row["end_to_end_fps"] = round(e2e["fps"], 1)
    row["end_to_end_cores"] = e2e["cores"]
    slowest = min(row["decode_only_fps"], row["model_only_fps"])
    row["efficiency"] = round(e2e["fps"] / slowest, 3)
    row["shared_cpu_bound_fps"] = round(
        1 / (1 / row["decode_only_fps"] + 1 / row["model_only_fps"]), 1
    )
    print(
        f"  decode-only {row['decode_only_fps']:.1f}  model-only {row['model_only_fps']:.1f}  "
        f"end to end {row['end_to_end_fps']:.1f} frames/s  (efficiency "
        f"{row['efficiency']:.2f})",
        file=sys.stderr,
        flush=True,
    )
    if args.duration_s <= 0:
        return row
    server = RtspServer("--source", "file", "--file", str(video)) if profile.camera else None
    try:
        urls = (
            [server.url] * args.max_streams
            if server
            else [f"synthetic://?seed={100 + i}&fps={fps:g}" for i in range(args.max_streams)]
        )

        def live(n: int) -> dict:
            return live_trial(
                urls[:n],
                backend,
                config,
                fps,
                duration_s=args.duration_s,
                warmup_s=args.warmup_s,
                server_pid=server.proc.pid if server else None,
                readers=args.readers,
            )

        estimate = int(0.9 * e2e["fps"] / fps)
        cap, trials = capacity(live, estimate, args.max_streams)
        row["capacity_streams"] = cap
        row["capacity_trials"] = {str(k): v for k, v in sorted(trials.items())}
        if cap:
            row["capacity_cores"] = trials[cap]["cores"]
            half = max(1, cap // 2)
            at_half = trials.get(half) or live(half)
            row["half_capacity"] = at_half
            lat = at_half["frame_to_decision_ms"] or {}
            print(
                f"  capacity {cap} streams; at {half}: frame-to-decision p50 "
                f"{lat.get('p50', float('nan')):.1f} ms, p99 {lat.get('p99', float('nan')):.1f}"
                " ms",
                file=sys.stderr,
                flush=True,
            )
    finally:
        if server:
            server.stop()
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.profiles",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--profiles", nargs="+", default=list(PROFILES), choices=list(PROFILES))
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES), choices=BACKBONES)
    parser.add_argument(
        "--engines",
        nargs="+",
        default=["onnxruntime:fp32"],
        help="backend:precision pairs (default onnxruntime:fp32)",
    )
    parser.add_argument("--streams", type=int, default=4, help="streams in the unpaced phases")
    parser.add_argument(
        "--phase-s", type=float, default=15.0, help="length of the model-only and end-to-end phases"
    )
    parser.add_argument(
        "--duration-s", type=float, default=60.0, help="each capacity trial (0: no live runs)"
    )
    parser.add_argument("--warmup-s", type=float, default=5.0, help="before each live trial")
    parser.add_argument("--max-streams", type=int, default=64)
    parser.add_argument(
        "--readers", default="thread", choices=["thread", "process"], help="stream.readers"
    )
    parser.add_argument(
        "--threads", type=int, default=0, help="inference threads (0: the backend's default)"
    )
    parser.add_argument("--out", default=str(RESULTS), help="results folder (default results/)")
    parser.add_argument("--name", default="profiles", help="result file name")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    base = load_checkpoint(DEMO, "cpu")[1]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for profile in (PROFILES[p] for p in args.profiles):
            for kind in args.backbones:
                for engine in args.engines:
                    print(f"{profile.name} x {kind} x {engine}", file=sys.stderr, flush=True)
                    rows.append(one_workload(profile, kind, engine, args, Path(tmp), base))
    print(
        f"\n{'profile':<10} {'backbone':<13} {'engine':<17} {'decode':>7} {'model':>7} "
        f"{'e2e':>7} {'eff':>5} {'capacity':>8} {'p99 ms':>7}"
    )
    for r in rows:
        lat = (r.get("half_capacity") or {}).get("frame_to_decision_ms") or {}
        print(
            f"{r['profile']:<10} {r['backbone']:<13} {r['engine']:<17} "
            f"{r['decode_only_fps']:>7.1f} {r['model_only_fps']:>7.1f} "
            f"{r['end_to_end_fps']:>7.1f} {r['efficiency']:>5.2f} "
            f"{r.get('capacity_streams', '-'):>8} {lat.get('p99', float('nan')):>7.1f}"
        )
    settings = {k: getattr(args, k) for k in ("streams", "phase_s", "duration_s", "warmup_s")}
    path = save(
        args.name, {"settings": settings, "cpu_count": os.cpu_count(), "rows": rows}, args.out
    )
    with figure(path.with_suffix(".png")) as (_, ax):
        labels = [f"{r['profile']}\n{r['backbone']}\n{r['engine']}" for r in rows]
        x = np.arange(len(rows))
        for j, key in enumerate(("decode_only_fps", "model_only_fps", "end_to_end_fps")):
            ax.bar(x + (j - 1) * 0.27, [r[key] for r in rows], 0.27, label=key[:-4])
        ax.set_xticks(x, labels, fontsize=6)
        ax.set_yscale("log")
        ax.set_ylabel("frames / s (model rate)")
        ax.set_title("Workload profiles")
        ax.legend(fontsize=7)
    print(f"wrote {path} and {path.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
