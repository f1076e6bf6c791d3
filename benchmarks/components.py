"""Every stage on its own: decode, resize/convert, backbone per batch size, temporal step,
head per window, tracker, publish — p50 / p90 / p99 / max.

    python -m benchmarks.components [--backend auto] [--batches 1 4 16 32] [--repeats 100]
        [--video-size 480]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch

from benchmarks.common import RESULTS, figure, save, stats_ms, time_calls
from engine.backends.cache import prepare_backend
from engine.backends.choice import EngineConfig
from engine.checkpoint import load_checkpoint
from engine.tracker import Tracker, TrackerConfig
from engine.wire.events import ActionEvent
from engine.wire.publisher import Publisher
from models.intervals import Interval
from training.synth import write_synthetic_dataset

DEMO = Path(__file__).resolve().parents[1] / "configs" / "weights" / "demo.pt"


def decode_and_convert(video: Path, size: int, repeats: int) -> tuple[list[float], list[float]]:
    """Per-frame H.264 decode time and resize-to-model-size + RGB conversion time (PyAV)."""
    decode, convert = [], []
    while len(decode) < repeats:
        with av.open(str(video)) as container:
            stream = container.streams.video[0]
            frames = container.decode(stream)
            while len(decode) < repeats:
                t = time.perf_counter()
                try:
                    frame = next(frames)
                except StopIteration:
                    break
                decode.append(time.perf_counter() - t)
                t = time.perf_counter()
                frame.reformat(width=size, height=size, format="rgb24").to_ndarray()
                convert.append(time.perf_counter() - t)
    return decode, convert


def tracker_times(repeats: int) -> list[float]:
    """One head run's worth of detections (a few overlapping segments) into the tracker."""
    tracker = Tracker(TrackerConfig(), frame_period_s=0.1, id_prefix="bench")
    rng = np.random.default_rng(0)
    out = []
    for i in range(repeats):
        end = 12.8 + 0.2 * i
        dets = [
            Interval(
                end - rng.uniform(0.5, 6.0),
                end - rng.uniform(0.0, 0.3),
                label,
                rng.uniform(0.2, 0.9),
            )
            for label in ("jump", "wave", "dash", "spin")
        ]
        t = time.perf_counter()
        tracker.update(dets, window_start_s=end - 12.8, window_end_s=end)
        out.append(time.perf_counter() - t)
    return out


def publish_times(repeats: int) -> list[float]:
    """publish() of an onset → the message on the ZeroMQ socket (the publisher thread's send)."""
    sent: dict[str, float] = {}
    publisher = Publisher(
        "tcp://127.0.0.1:*",
        run_id="bench",
        heartbeat_s=None,
        on_sent=lambda topic, payload, message: sent.setdefault(
            message.event_id, time.perf_counter()
        ),
    )
    publisher.start()
    out = []
    try:
        for i in range(repeats):
            now = time.time()
            event = ActionEvent("onset", f"e{i}", "bench", "wave", 0.9, 1.0, now, 1.3, now)
            t = time.perf_counter()
            publisher.publish(event)
            deadline = time.monotonic() + 2.0
            while event.event_id not in sent and time.monotonic() < deadline:
                time.sleep(0.00005)
            out.append(sent[event.event_id] - t)
    finally:
        publisher.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.components", description=__doc__)
    parser.add_argument(
        "--backend", default="auto", choices=["auto", "torch", "onnxruntime", "tensorrt"]
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16, 32])
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--video-size", type=int, default=480, help="decoded video side (px)")
    parser.add_argument("--weights", default=str(DEMO))
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    model, config, _ = load_checkpoint(args.weights)
    # the engine `actstream run` uses (batch bound engine.max_batch), unless larger batches
    # are asked for: the same cache entry as the end-to-end benchmark
    max_batch = max(EngineConfig().max_batch, *args.batches)
    backend = prepare_backend(
        model, config, backend=args.backend, device=args.device, max_batch=max_batch
    )
    stages: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        write_synthetic_dataset(
            tmp, videos=1, seed=1, duration_s=max(10.0, args.repeats / 10 + 1), size=args.video_size
        )
        video = next(Path(tmp).glob("*.mp4"))
        decode, convert = decode_and_convert(video, config.backbone.image_size, args.repeats)
    stages[f"decode_h264_{args.video_size}px"] = stats_ms(decode)
    stages[f"resize_convert_to_{config.backbone.image_size}px_rgb"] = stats_ms(convert)
    s = config.backbone.image_size
    rng = np.random.default_rng(0)
    for b in args.batches:
        images = rng.integers(0, 256, (b, s, s, 3), dtype=np.uint8)
        stages[f"backbone_b{b}"] = stats_ms(
            time_calls(lambda i=images: backend.encode_frames(i, i), repeats=args.repeats)
        )
    cache = backend.init_cache(1)
    x = torch.randn(1, config.backbone.feature_dim)

    def step():
        nonlocal cache
        _, cache = backend.temporal_step(x, cache)

    stages["temporal_step"] = stats_ms(time_calls(step, repeats=args.repeats))
    T = config.head.window_frames
    window, valid = torch.randn(1, T, config.temporal.dim), torch.ones(1, T, dtype=torch.bool)
    stages["head_window"] = stats_ms(
        time_calls(lambda: backend.head(window, valid), repeats=args.repeats)
    )
    stages["tracker_update"] = stats_ms(tracker_times(args.repeats))
    stages["publish_to_socket"] = stats_ms(publish_times(args.repeats))
    print(f"backend: {backend.describe()}")
    print(f"{'stage':<32}{'p50':>9}{'p90':>9}{'p99':>9}{'max':>9}  (ms)")
    for name, st in stages.items():
        print(f"{name:<32}{st['p50']:>9.3f}{st['p90']:>9.3f}{st['p99']:>9.3f}{st['max']:>9.3f}")
    path = save("components", {"backend": backend.describe(), "stages_ms": stages}, args.out)
    with figure(path.with_suffix(".png")) as (_, ax):
        names = list(stages)
        ax.barh(names, [stages[n]["p50"] for n in names], label="p50")
        ax.scatter(
            [stages[n]["p99"] for n in names], names, color="k", marker="|", s=200, label="p99"
        )
        ax.set_xscale("log")
        ax.set_xlabel("ms")
        ax.set_title(f"Stage costs ({backend.describe()})")
        ax.legend()
    print(f"wrote {path} and {path.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
