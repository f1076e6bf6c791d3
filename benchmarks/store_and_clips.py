"""What keeping events costs the detector: the event store under 10 x the event rate, and
evidence clips' CPU per stream.

    python -m benchmarks.store_and_clips [--streams 16] [--rate-streams 40] [--load 10]
                                         [--duration-s 30] [--rounds 2]
                                         [--clip-streams 4] [--clip-video-s 60] [--clip-rounds 2]

Store: the live-streams run of `benchmarks.end_to_end` (`--streams` 10-fps `synthetic://`
streams, below this machine's capacity) alternately without a store and with an SQLite store
fed every published message plus, from another thread, enough made-up onsets and offsets to
reach `--load` (10) times the event rate of `--rate-streams` (40) streams (the per-stream rate
measured by the first run without a store). Reports each run's p99 frame-to-event latency and
the ratio of the medians (with / without), all in one process.

Clips: `--clip-streams` H.264 files (`--clip-size`, 25 fps, a keyframe every 2 s, synthetic
scenes with actions) read as fast as the model takes them, with clips and without. Reports the
process CPU time of each run, the clip writer thread's own CPU time, clips written, and the
cost per stream per minute of video.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.common import figure, save
from benchmarks.end_to_end import add_run_args, run_with
from engine.backends.cache import prepare_backend
from engine.build import build_detector
from engine.checkpoint import load_checkpoint
from engine.config import load_config
from engine.metrics import Metrics
from engine.store.events import EventStore, StoreConfig
from engine.wire.memory import MemoryPublisher
from stream.sources import parse_sources
from stream.synthetic import SyntheticScene
from training.synth import write_video


class Load:
    """Feeds the store `rate` made-up messages per second (an onset, then its offset), in
    bursts every 50 ms, until stopped; the payloads are made beforehand (in a detector they
    come made from the publisher), so that the thread costs what the store's queue costs."""

    def __init__(self, store: EventStore, rate: float, duration_s: float) -> None:
        self.store, self.rate, self.sent = store, rate, 0
        self.payloads = [_payload(i) for i in range(int(rate * (duration_s + 60)) + 2)]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="store-load", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        t0 = time.monotonic()
        while not self._stop.wait(0.05):
            due = min(int(self.rate * (time.monotonic() - t0)), len(self.payloads))
            for payload in self.payloads[self.sent : due]:
                self.store.record(payload)
            self.sent = max(self.sent, due)


def _payload(i: int) -> bytes:
    now = time.time()
    body = {"schema": "actstream.event/1", "run_id": "load", "seq": i, "wall_s": now,
            "type": "onset" if i % 2 == 0 else "offset", "stream": f"load{i % 40}",
            "event_id": f"load-{i // 2}", "label": "wave", "score": 0.8, "start_s": 1.0,
            "start_wall_s": now, "frame_s": 1.5, "frame_wall_s": now, "lookahead_frames": 0,
            "late": False}  # fmt: skip
    if body["type"] == "offset":
        body |= {"end_s": 3.0, "end_wall_s": now, "duration_s": 2.0, "reason": "ended"}
    return json.dumps(body).encode()


def store_rounds(args, folder: Path) -> dict:
    runs: list[dict] = []
    rate = None
    for i in range(2 * args.rounds):
        with_store = i % 2 == 1
        store = load = None
        on_sent = None
        if with_store:
            store = EventStore(
                StoreConfig(path=str(folder / f"events{i}.db")), run_id=f"bench{i}", model="demo"
            )
            store.start()
            on_sent = lambda _t, payload, _m, s=store: s.record(payload)  # noqa: E731
            extra = max(0.0, args.load * (rate or 0.0) * args.rate_streams - rate * args.streams)
            load = Load(store, extra, args.duration_s)
            load.start()
        r = run_with(args, args.streams, on_sent)
        r.pop("_f2e")
        events_per_s = r["events"] / r["duration_s"]
        if not with_store and rate is None:
            rate = events_per_s / args.streams  # per stream
        row = {
            "store": with_store,
            "p99_ms": r["frame_to_event_ms"]["p99"] if r["frame_to_event_ms"] else None,
            "p50_ms": r["frame_to_event_ms"]["p50"] if r["frame_to_event_ms"] else None,
            "events_per_s": round(events_per_s, 2),
            "frames_dropped": r["frames_dropped"],
            "frames_processed": r["frames_processed"],
            "frames_expected": r["frames_expected"],
        }
        if with_store:
            load.stop()
            store.close(timeout_s=30)
            row |= {
                "store_messages_per_s": round((store.written + store.dropped) / r["duration_s"], 1),
                "store_written": store.written,
                "store_dropped": store.dropped,
                "store_errors": store.errors,
            }
        runs.append(row)
        print(
            f"store {'on ' if with_store else 'off'}: p99 {row['p99_ms'] or float('nan'):.1f} ms, "
            f"p50 {row['p50_ms'] or float('nan'):.1f} ms, {row['events_per_s']} events/s, "
            f"dropped frames "
            f"{row['frames_dropped']}"
            + (
                f", store {row['store_messages_per_s']} msg/s, lost {row['store_dropped']}"
                if with_store
                else ""
            ),  # fmt: skip
            file=sys.stderr,
            flush=True,
        )
    off = [r["p99_ms"] for r in runs if not r["store"]]
    on = [r["p99_ms"] for r in runs if r["store"]]
    return {
        "streams": args.streams,
        "duration_s": args.duration_s,
        "load_factor": args.load,
        "rate_streams": args.rate_streams,
        "events_per_s_per_stream": rate,
        "runs": runs,
        "p99_ratio": statistics.median(on) / statistics.median(off),
    }


def clip_runs(args, folder: Path) -> dict:
    width, height = (int(v) for v in args.clip_size.split("x"))
    files = []
    for i in range(args.clip_streams):
        path = folder / f"v{i}.mp4"
        scene = SyntheticScene(seed=20 + i, width=width, height=height,
                               duration_s=args.clip_video_s)  # fmt: skip
        write_video(path, scene, duration_s=args.clip_video_s, fps=25)
        files.append(path)
    model, model_config, _ = load_checkpoint(args.weights)
    backend = None
    rows = {}
    for clips in (False, True) * args.clip_rounds:
        config = load_config(None, ["metrics.port=null", "stream.realtime=false",
                                    f"clips.enabled={str(clips).lower()}",
                                    f"clips.dir={json.dumps(str(folder / 'clips'))}"])  # fmt: skip
        config = dataclasses.replace(config, model=model_config)
        backend = backend or prepare_backend(
            model, model_config, backend=args.backend, max_batch=config.engine.max_batch,
            threads=args.threads,
        )  # fmt: skip
        specs = parse_sources([f"v{i}={p}" for i, p in enumerate(files)])
        publisher = MemoryPublisher()
        detector = build_detector(specs, config, backend, run_id="clips", metrics=Metrics(),
                                  publisher=publisher)  # fmt: skip
        cpu0, t0 = _cpu_s(), time.monotonic()
        detector.start()
        detector.run(threading.Event())
        detector.close()
        cpu, wall = _cpu_s() - cpu0, time.monotonic() - t0
        written = sum(1 for m in publisher.messages if type(m).__name__ == "ClipReady")
        writer_cpu = detector.clips.cpu_s if detector.clips is not None else 0.0
        key = "clips" if clips else "no_clips"
        rows.setdefault(key, []).append({"cpu_s": cpu, "wall_s": wall, "clips": written,
                                         "writer_cpu_s": writer_cpu})  # fmt: skip
        print(
            f"clips {'on ' if clips else 'off'}: process CPU {cpu:.2f} s in {wall:.1f} s, "
            f"{written} clips, writer thread {writer_cpu:.3f} s",
            file=sys.stderr,
            flush=True,
        )
    minutes = args.clip_streams * args.clip_video_s / 60
    on = statistics.median(r["cpu_s"] for r in rows["clips"])
    off = statistics.median(r["cpu_s"] for r in rows["no_clips"])
    writer = statistics.median(r["writer_cpu_s"] for r in rows["clips"])
    clips_written = statistics.median(r["clips"] for r in rows["clips"])
    return {
        "streams": args.clip_streams,
        "video_s": args.clip_video_s,
        "size": args.clip_size,
        "runs": rows,
        "extra_cpu_s_per_stream_minute": (on - off) / minutes,
        "writer_cpu_s_per_stream_minute": writer / minutes,
        "writer_cpu_ms_per_clip": 1e3 * writer / max(clips_written, 1),
        "cpu_share": (on - off) / off,
    }


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.store_and_clips",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--streams", type=int, default=16, help="live streams (store part)")
    parser.add_argument(
        "--rate-streams", type=int, default=40, help="streams whose event rate the load scales"
    )
    parser.add_argument("--rounds", type=int, default=2, help="runs without and with a store")
    parser.add_argument("--load", type=float, default=10.0, help="store load / event rate")
    parser.add_argument("--clip-streams", type=int, default=4)
    parser.add_argument("--clip-video-s", type=float, default=60.0)
    parser.add_argument("--clip-rounds", type=int, default=2, help="runs without and with clips")
    parser.add_argument("--clip-size", default="640x480")
    parser.add_argument("--skip", choices=["store", "clips"], help="leave one part out")
    add_run_args(parser)
    parser.set_defaults(duration_s=30.0)
    args = parser.parse_args(argv)
    result: dict = {}
    with tempfile.TemporaryDirectory(prefix="actstream-bench-") as tmp:
        folder = Path(tmp)
        if args.skip != "store":
            result["store"] = store_rounds(args, folder)
            s = result["store"]
            print(f"store at {s['load_factor']:g}x the event rate of {s['rate_streams']} streams, "
                  f"{s['streams']} streams running: "
                  f"p99 frame-to-event with / without = {s['p99_ratio']:.3f}")  # fmt: skip
        if args.skip != "clips":
            result["clips"] = clip_runs(args, folder)
            c = result["clips"]
            print(f"clips, {c['streams']} streams of {c['size']}: "
                  f"{c['extra_cpu_s_per_stream_minute']:.2f} CPU s per stream-minute of video "
                  f"({100 * c['cpu_share']:.1f} % of the run's CPU); writer thread "
                  f"{c['writer_cpu_s_per_stream_minute']:.3f} s per stream-minute, "
                  f"{c['writer_cpu_ms_per_clip']:.1f} ms per clip")  # fmt: skip
    path = save("store_and_clips", result, args.out)
    with figure(path.with_suffix(".png")) as (fig, ax):
        labels, values = [], []
        for i, r in enumerate(result.get("store", {}).get("runs", [])):
            labels.append(f"{i + 1}: store {'on' if r['store'] else 'off'}")
            values.append(r["p99_ms"] or 0.0)
        for key, runs in result.get("clips", {}).get("runs", {}).items():
            for i, r in enumerate(runs):
                labels.append(f"{key} {i + 1}: CPU s")
                values.append(r["cpu_s"])
        ax.barh(labels, values)
        ax.set_xlabel("store runs: p99 frame-to-event (ms); clip runs: process CPU (s)")
        ax.set_title("Event store under load, clip cutting's CPU")
    print(f"wrote {path} and {path.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
