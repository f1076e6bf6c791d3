"""Pipeline efficiency: end-to-end throughput ÷ min(decode-only throughput, model-only
throughput), all three measured in the same run on the same files (4 streams by default).

* decode-only: every file decoded, sampled and resized by PyAV exactly as a reader delivers
  frames, one thread per stream, as fast as possible;
* model-only: the detector's own loop (batched backbone, temporal steps, head, tracker,
  publisher) over those frames already in memory;
* end to end: the detector on the files with reader threads, `--fast` (no pacing).

    python -m benchmarks.pipeline_efficiency [--streams 4] [--video-s 60] [--backend auto]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.common import RESULTS, figure, save
from engine.checkpoint import load_checkpoint
from engine.compile import prepare_backend
from engine.config import load_config
from engine.detector import build_detector
from stream.reader import ReaderOptions, ReaderState, StatusEvent, decode_file
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
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0: per core)")
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
        options = ReaderOptions(width=size, height=size, fps=model_config.fps, realtime=False)

        # decode-only
        det, specs = detector_for(files, backend, model_config, buffer_frames=64)
        det.close(publish=False)
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
        det.run(threading.Event())
        model_s = time.perf_counter() - t
        det.close()

        # end to end
        det, specs = detector_for(files, backend, model_config, buffer_frames=32)
        t = time.perf_counter()
        det.start()
        det.run(threading.Event())
        e2e_s = time.perf_counter() - t
        det.close()
    fps = {
        "decode_only": total / decode_s,
        "model_only": total / model_s,
        "end_to_end": total / e2e_s,
    }
    efficiency = fps["end_to_end"] / min(fps["decode_only"], fps["model_only"])
    print(
        f"{args.streams} streams x {args.video_s:g} s ({total} frames at "
        f"{model_config.fps:g} fps), {backend.describe()}"
    )
    for k, v in fps.items():
        print(f"{k:<12} {v:>9.1f} frames/s")
    print(f"pipeline efficiency: {efficiency:.3f} (target >= 0.9)")
    result = {
        "streams": args.streams,
        "frames": total,
        "backend": backend.describe(),
        "throughput_fps": fps,
        "efficiency": efficiency,
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
