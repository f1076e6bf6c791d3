"""End to end: live `synthetic://` streams (known ground-truth actions) through the whole
detector, with a real ZeroMQ subscriber in another process.

Measures, per event: frame-to-event latency (the event's publish wall time − the wall time
its newest frame was decoded), delivery (subscriber receive − publish), and onset delay
(stream time of the onset decision − the true onset's time) — p50 / p90 / p99; plus frames
processed and dropped.

    python -m benchmarks.end_to_end [--streams 4] [--duration-s 60] [--backend auto]
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing as mp
import sys
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS, figure, save, stats_ms
from engine.backends.cache import prepare_backend
from engine.build import build_detector
from engine.checkpoint import load_checkpoint
from engine.config import load_config
from engine.metrics import Metrics
from models.intervals import Interval
from stream.frame_sources import synthetic_scene
from stream.settings import ReaderOptions
from stream.sources import parse_sources
from training.event_metrics import ReportedAction, event_metrics, event_table

ROOT = Path(__file__).resolve().parents[1]


def _subscribe(endpoint: str, streams: int, limit_s: float, ready, conn) -> None:
    """Child process: receive every message until all streams report `stopped`."""
    from engine.wire.subscriber import Subscriber

    sub = Subscriber(endpoint)
    records, stopped, joined = [], set(), False
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline and len(stopped) < streams:
        item = sub.receive(0.2)
        if item is None:
            continue
        now = time.time()
        _, message, _ = item
        if message["type"] == "heartbeat" and not joined:
            joined = True
            ready.set()
        if message["type"] == "status" and message["state"] == "stopped":
            stopped.add(message["stream"])
        records.append((now, message))
    sub.close()
    conn.send(records)
    conn.close()


def event_quality(events: list[dict], truth: dict[str, list], elapsed_s: float) -> dict:
    """The event table (`training.event_metrics`) of the received onset/offset pairs against
    the true actions that ended while the streams ran."""
    onsets = {(m["stream"], m["event_id"]): m for m in events if m["type"] == "onset"}
    actions = [
        ReportedAction(
            Interval(m["start_s"], m["end_s"], m["label"], m["score"], m["stream"]),
            onset_s=onsets[(m["stream"], m["event_id"])]["frame_s"],
            offset_s=m["frame_s"],
            onset_score=onsets[(m["stream"], m["event_id"])]["score"],
            late=onsets[(m["stream"], m["event_id"])].get("late", False),
            onset_start_s=onsets[(m["stream"], m["event_id"])]["start_s"],
        )
        for m in events
        if m["type"] == "offset" and (m["stream"], m["event_id"]) in onsets
    ]
    ended = [
        Interval(a.start_s, a.end_s, a.label, video_id=sid)
        for sid, segs in truth.items()
        for a in segs
        if a.end_s <= elapsed_s
    ]
    minutes = len(truth) * elapsed_s / 60.0
    return event_metrics(actions, ended, minutes=minutes, with_map=False) if ended else {}


def onset_delays(onsets: list[dict], truth: dict[str, list], max_gap_s: float = 2.0) -> list[float]:
    """Each onset's decision time (`frame_s`) − the start of the true action it reports (same
    stream and label, start nearest the event's `start_s`, within `max_gap_s`); each true
    action counts once."""
    delays, used = [], set()
    for m in sorted(onsets, key=lambda m: m["frame_s"]):
        candidates = [
            (abs(seg.start_s - m["start_s"]), i, seg)
            for i, seg in enumerate(truth[m["stream"]])
            if seg.label == m["label"]
            and (m["stream"], i) not in used
            and seg.start_s <= m["frame_s"]
        ]
        if not candidates:
            continue
        gap, i, seg = min(candidates, key=lambda c: c[0])
        if gap <= max_gap_s:
            used.add((m["stream"], i))
            delays.append(m["frame_s"] - seg.start_s)
    return delays


def run(
    *,
    streams: int,
    duration_s: float,
    backend_name: str,
    weights: str,
    fps: float = 10.0,
    threads: int = 0,
    readers: str = "thread",
    on_sent=None,
    previews=None,
    serve=None,
) -> dict:
    """One run of `streams` live streams for `duration_s`; `on_sent(topic, payload, message)`
    gets every message sent (the event store, in `benchmarks.store_and_clips`); `previews`
    go to the readers and `serve(detector, metrics)`, called once the publisher is bound,
    starts what watches the run and returns its close (the web view, in
    `benchmarks.web_clients`); `readers`: `stream.readers` (thread or process)."""
    # Clips are measured on their own (benchmarks.store_and_clips).
    config = load_config(
        None,
        [
            "publisher.heartbeat_s=0.5",
            "metrics.port=null",
            "clips.enabled=false",
            f"stream.readers={readers}",
        ],
    )
    model, model_config, _ = load_checkpoint(weights)
    config = dataclasses.replace(config, model=dataclasses.replace(model_config, fps=fps))
    backend = prepare_backend(
        model,
        model_config,
        backend=backend_name,
        max_batch=config.engine.max_batch,
        threads=threads,
    )
    sources = [f"s{i}=synthetic://?seed={100 + i}&fps={fps:g}" for i in range(streams)]
    specs = parse_sources(sources)
    metrics = Metrics()
    detector = build_detector(
        specs,
        config,
        backend,
        run_id="bench",
        metrics=metrics,
        endpoint="tcp://127.0.0.1:*",
        on_sent=on_sent,
        previews=previews,
    )
    endpoint = detector.publisher.start()
    close_watchers = serve(detector, metrics) if serve is not None else (lambda: None)
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_subscribe, args=(endpoint, streams, duration_s + 60, ready, child))
    proc.start()
    if not ready.wait(30):
        proc.kill()
        raise RuntimeError("the subscriber process did not receive a heartbeat within 30 s")
    detector.start()
    started = time.monotonic()
    detector.run(threading.Event(), duration_s=duration_s)
    elapsed = time.monotonic() - started
    per_stream = [
        metrics.registry.get_sample_value(
            "actstream_frames_processed_total", {"stream": s.stream_id}
        )
        or 0
        for s in specs
    ]
    processed = sum(per_stream)
    dropped = sum(st.buffer.dropped for st in detector.streams.values())
    stages = {}
    for stage in ("preprocess", "backbone", "temporal", "head", "track"):
        total = metrics.registry.get_sample_value(
            "actstream_stage_duration_seconds_sum", {"stage": stage}
        )
        count = metrics.registry.get_sample_value(
            "actstream_stage_duration_seconds_count", {"stage": stage}
        )
        if count:
            stages[stage] = {"mean_ms": 1e3 * total / count, "calls": int(count), "total_s": total}
    detector.close()
    close_watchers()
    records = parent.recv() if parent.poll(duration_s + 60) else []
    proc.join(10)
    events = [m for _, m in records if m["type"] in ("onset", "offset")]
    onsets = [m for m in events if m["type"] == "onset"]
    options = ReaderOptions(
        width=model_config.backbone.image_size, height=model_config.backbone.image_size, fps=fps
    )
    truth = {s.stream_id: synthetic_scene(s, options).segments(elapsed + 5) for s in specs}
    # Offsets published by the shutdown at the end are not decisions on a frame: left out.
    timed = [m for m in events if m.get("reason") != "shutdown"]
    f2e = [m["wall_s"] - m["frame_wall_s"] for m in timed]
    delivery = [now - m["wall_s"] for now, m in records if m["type"] in ("onset", "offset")]
    shutdown_offsets = len(events) - len(timed)
    delays = onset_delays(onsets, truth)
    quality = event_quality(events, truth, elapsed)
    true_onsets = sum(1 for segs in truth.values() for seg in segs if seg.start_s < elapsed)
    return {
        "streams": streams,
        "fps": fps,
        "duration_s": round(elapsed, 2),
        "backend": backend.describe(),
        "frames_processed": int(processed),
        "frames_expected": int(streams * fps * elapsed),
        "frames_dropped": int(dropped),
        "readers": readers,
        # the least-served stream's frames as a share of an equal split of what was processed
        "min_fair_share": round(min(per_stream) * streams / processed, 3) if processed else 0.0,
        "stages": stages,
        "events": len(events),
        "shutdown_offsets": shutdown_offsets,
        "onsets": len(onsets),
        "true_onsets": true_onsets,
        "onsets_matched": len(delays),
        "event_quality": quality,
        "frame_to_event_ms": stats_ms(f2e) if f2e else None,
        "delivery_ms": stats_ms(delivery) if delivery else None,
        "onset_delay_s": {
            "p50": float(np.median(delays)),
            "p90": float(np.percentile(delays, 90)),
            "mean": float(np.mean(delays)),
            "n": len(delays),
        }
        if delays
        else None,
        "slowest_events": [
            {
                "stream": m["stream"],
                "type": m["type"],
                "frame_s": m["frame_s"],
                "ms": round(1e3 * (m["wall_s"] - m["frame_wall_s"]), 2),
            }
            for m in sorted(timed, key=lambda m: m["frame_wall_s"] - m["wall_s"])[:5]
        ],
        "_f2e": f2e,
    }


def run_with(args: argparse.Namespace, streams: int, on_sent=None, **hooks) -> dict:
    """`run` with the options `add_run_args` parsed (`hooks`: `previews`, `serve`)."""
    return run(
        streams=streams,
        duration_s=args.duration_s,
        backend_name=args.backend,
        weights=args.weights,
        fps=args.fps,
        threads=args.threads,
        readers=args.readers,
        on_sent=on_sent,
        **hooks,
    )


def add_run_args(parser: argparse.ArgumentParser) -> None:
    """The options of a live-streams run (`run`), shared with the capacity benchmark."""
    parser.add_argument("--duration-s", type=float, default=60.0, help="run length")
    parser.add_argument("--fps", type=float, default=10.0, help="frame rate of each stream")
    parser.add_argument(
        "--backend", default="auto", choices=["auto", "torch", "onnxruntime", "tensorrt"]
    )
    parser.add_argument("--weights", default=str(ROOT / "configs" / "weights" / "demo.pt"))
    parser.add_argument(
        "--threads", type=int, default=0, help="ONNX Runtime threads (0: cores - 1)"
    )
    parser.add_argument(
        "--readers", default="thread", choices=["thread", "process"], help="stream.readers"
    )
    parser.add_argument("--out", default=str(RESULTS), help="results folder (default results/)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.end_to_end", description=__doc__)
    parser.add_argument("--streams", type=int, default=4)
    add_run_args(parser)
    args = parser.parse_args(argv)
    result = run_with(args, args.streams)
    f2e = result.pop("_f2e")
    r = result
    print(f"{r['streams']} streams at {r['fps']:g} fps for {r['duration_s']} s on {r['backend']}")
    print(
        f"frames processed {r['frames_processed']} / expected {r['frames_expected']}, "
        f"dropped {r['frames_dropped']}; least-served stream {r['min_fair_share']:.2f} of an "
        f"equal share (readers: {r['readers']})"
    )
    for stage, st in r["stages"].items():
        print(
            f"stage {stage:<10} mean {st['mean_ms']:.3f} ms x {st['calls']} calls "
            f"= {st['total_s']:.2f} s"
        )
    if r["frame_to_event_ms"]:
        s = r["frame_to_event_ms"]
        print(
            f"frame-to-event ms: p50 {s['p50']:.1f}  p90 {s['p90']:.1f}  p99 {s['p99']:.1f}  "
            f"max {s['max']:.1f}  (n={s['n']})"
        )
        d = r["delivery_ms"]
        print(f"delivery ms:       p50 {d['p50']:.2f}  p99 {d['p99']:.2f}")
    q = r["event_quality"]
    if q:
        print("\n".join(event_table(q)))
    if r["onset_delay_s"]:
        o = r["onset_delay_s"]
        print(
            f"onset delay s:     p50 {o['p50']:.2f}  p90 {o['p90']:.2f}  "
            f"({o['n']} of {r['true_onsets']} true onsets matched)"
        )
    name = f"end_to_end_{args.streams}streams" + ("_process" if args.readers == "process" else "")
    path = save(name, result, args.out)
    with figure(path.with_suffix(".png")) as (_, ax):
        if f2e:
            ax.hist(np.asarray(f2e) * 1e3, bins=40)
        ax.set_xlabel("frame-to-event latency (ms)")
        ax.set_ylabel("events")
        ax.set_title(f"{args.streams} streams at {args.fps:g} fps, {r['backend']}")
    print(f"wrote {path} and {path.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
