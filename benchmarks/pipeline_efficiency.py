"""Pipeline efficiency: end-to-end throughput ÷ min(decode-only throughput, model-only
throughput), all three measured in the same run on the same files (4 streams by default).

* decode-only: every file decoded, sampled and resized by PyAV exactly as a reader delivers
  frames, one thread per stream, as fast as possible;
* model-only: the detector's own loop (batched backbone, temporal steps, head, tracker,
  publisher) over those frames already in memory;
* end to end: the detector on the files with reader threads, `--fast` (no pacing).

It also records each phase's CPU use (process CPU time ÷ wall time, in cores) and the
shared-CPU bound: when decoding and the model both keep every core busy on their own (as on a
CPU-only host), running them together can reach at most 1 / (1/decode + 1/model) frames/s, so
efficiency cannot exceed bound ÷ min(decode, model) there; `efficiency_vs_bound` says how
close the pipeline comes to it. On a GPU host the model leaves the cores to the decoders and
the bound no longer applies.

    python -m benchmarks.pipeline_efficiency [--streams 4] [--video-s 60] [--backend auto]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.common import RESULTS, figure, save
from engine.backends.cache import prepare_backend
from engine.build import build_detector
from engine.checkpoint import load_checkpoint
from engine.config import load_config
from stream.frame_sources import decode_file
from stream.reader import ReaderState, StatusEvent
from stream.settings import ReaderOptions, StreamConfig
from stream.sources import parse_sources
from training.synth import write_synthetic_dataset

ROOT = Path(__file__).resolve().parents[1]


def detector_for(files: list[Path], backend, model_config, *, buffer_frames: int):
    config = load_config(
        None,
        [
            "stream.realtime=false",
            f"stream.buffer_frames={buffer_frames}",
            "publisher.heartbeat_s=null",
        ],
    )
    config = dataclasses.replace(config, model=model_config)
    specs = parse_sources([f"v{i}={f}" for i, f in enumerate(files)])
    detector = build_detector(specs, config, backend, run_id="eff", endpoint="tcp://127.0.0.1:*")
    detector.publisher.start()
    return detector, specs


def decode_only(specs, options: ReaderOptions) -> tuple[list[list], float]:
    frames: list[list] = [[] for _ in specs]

    def work(i: int) -> None:
        frames[i] = decode_file(specs[i], options)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(specs))]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return frames, time.perf_counter() - t


class CpuUse:
    """Cores this process kept busy between `start` and `stop` (CPU time ÷ wall time)."""

    def __enter__(self):
        self.cpu, self.wall = time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.cores = (time.process_time() - self.cpu) / (time.perf_counter() - self.wall)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.pipeline_efficiency", description=__doc__
    )
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--video-s", type=float, default=60.0, help="length of each file")
    parser.add_argument(
        "--video-size", type=int, default=240, help="side of the encoded video (px)"
    )
    parser.add_argument(
        "--backend", default="auto", choices=["auto", "torch", "onnxruntime", "tensorrt"]
    )
    parser.add_argument(
        "--threads", type=int, default=0, help="ONNX Runtime threads (0: cores - 1)"
    )
    parser.add_argument("--weights", default=str(ROOT / "configs" / "weights" / "demo.pt"))
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    model, model_config, _ = load_checkpoint(args.weights)
    backend = prepare_backend(model, model_config, backend=args.backend, threads=args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        write_synthetic_dataset(
            tmp, videos=args.streams, seed=9, duration_s=args.video_s, size=args.video_size, fps=10
        )
        files = sorted(Path(tmp).glob("*.mp4"))
        size = model_config.backbone.image_size
        options = ReaderOptions(
            width=size, height=size, fps=model_config.fps, stream=StreamConfig(realtime=False)
        )

        # decode-only
        det, specs = detector_for(files, backend, model_config, buffer_frames=64)
        det.close(publish=False)
        with CpuUse() as decode_cpu:
            decoded, decode_s = decode_only(specs, options)
        total = sum(len(f) for f in decoded)

        # model-only: the detector loop over frames already in memory
        det, specs = detector_for(files, backend, model_config, buffer_frames=total + 8)
        for st, frames in zip(det.streams.values(), decoded, strict=True):
            st.buffer.put(StatusEvent(st.spec.stream_id, ReaderState.CONNECTED, time.time()))
            for frame in frames:
                st.buffer.put(frame)
            st.buffer.put(StatusEvent(st.spec.stream_id, ReaderState.ENDED, time.time()))
        t = time.perf_counter()
        with CpuUse() as model_cpu:
            det.run(threading.Event())
        model_s = time.perf_counter() - t
        det.close()

        # end to end
        det, specs = detector_for(files, backend, model_config, buffer_frames=32)
        t = time.perf_counter()
        with CpuUse() as e2e_cpu:
            det.start()
            det.run(threading.Event())
        e2e_s = time.perf_counter() - t
        det.close()
    fps = {
        "decode_only": total / decode_s,
        "model_only": total / model_s,
        "end_to_end": total / e2e_s,
    }
    slowest = min(fps["decode_only"], fps["model_only"])
    efficiency = fps["end_to_end"] / slowest
    bound = 1.0 / (1.0 / fps["decode_only"] + 1.0 / fps["model_only"])
    cores = {"decode_only": decode_cpu.cores, "model_only": model_cpu.cores}
    cores["end_to_end"] = e2e_cpu.cores
    print(
        f"{args.streams} streams x {args.video_s:g} s ({total} frames at "
        f"{model_config.fps:g} fps), {backend.describe()}"
    )
    for k, v in fps.items():
        print(f"{k:<12} {v:>9.1f} frames/s  ({cores[k]:.2f} of {os.cpu_count()} cores busy)")
    print(f"pipeline efficiency: {efficiency:.3f} (target >= 0.9)")
    print(
        f"shared-CPU bound 1/(1/decode + 1/model) = {bound:.1f} frames/s, efficiency "
        f"<= {bound / slowest:.3f} when both stages fill the cores; end to end reaches "
        f"{fps['end_to_end'] / bound:.3f} of it"
    )
    result = {
        "streams": args.streams,
        "frames": total,
        "backend": backend.describe(),
        "throughput_fps": fps,
        "efficiency": efficiency,
        "cores_busy": cores,
        "cpu_count": os.cpu_count(),
        "shared_cpu_bound_fps": bound,
        "efficiency_bound": bound / slowest,
        "efficiency_vs_bound": fps["end_to_end"] / bound,
        "target": 0.9,
        "met": efficiency >= 0.9,
    }
    path = save(f"pipeline_efficiency_{args.streams}streams", result, args.out)
    with figure(path.with_suffix(".png")) as (_, ax):
        ax.bar(list(fps), list(fps.values()))
        ax.set_ylabel("frames / s")
        ax.set_title(
            f"Pipeline efficiency {efficiency:.2f} ({args.streams} streams, {backend.describe()})"
        )
    print(f"wrote {path} and {path.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
