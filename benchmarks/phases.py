"""The phases of a workload benchmark (`benchmarks.profiles`): an engine compiled for a
model, the detector loop over frames in memory (model-only), the detector on unpaced files
(end to end), a live run of N streams held or not in real time, and the capacity search over
such runs."""

from __future__ import annotations

import dataclasses
import sys
import threading
import time
from pathlib import Path

from benchmarks.common import stats_ms
from benchmarks.cpu_precisions import scene_frames
from benchmarks.workloads import StageCpu, process_cpu_s
from engine.backends.compile import compile_engine, load_engine
from engine.build import build_detector
from engine.config import load_config
from engine.metrics import Metrics
from stream.reader import ReaderState, StatusEvent
from stream.sources import parse_sources

OVERRIDES = ["publisher.heartbeat_s=null", "metrics.port=null", "clips.enabled=false"]


def engine_backend(model, config, engine: str, where: Path, threads: int):
    """Compiles `engine` ("backend:precision") for the model into `where` and loads it."""
    backend, _, precision = engine.partition(":")
    s = config.backbone.image_size
    compile_engine(
        model,
        config,
        where,
        backend=backend,
        precision=precision or "fp32",
        max_batch=32,
        calibration=scene_frames(s) if precision == "int8" else None,
        verify=True,
    )
    return load_engine(where, threads=threads)[0]


def make_detector(
    sources,
    backend,
    model_config,
    *,
    fast: bool,
    buffer_frames: int = 32,
    on_decision=None,
    readers: str = "thread",
):
    config = load_config(
        None,
        [
            *OVERRIDES,
            f"stream.readers={readers}",
            f"stream.buffer_frames={buffer_frames}",
            f"stream.realtime={'false' if fast else 'true'}",
        ],
    )
    config = dataclasses.replace(config, model=model_config)
    specs = parse_sources([f"s{i}={url}" for i, url in enumerate(sources)])
    detector = build_detector(
        specs,
        config,
        backend,
        run_id="prof",
        metrics=Metrics(),
        endpoint="tcp://127.0.0.1:*",
        on_decision=on_decision,
    )
    detector.publisher.start()
    return detector, specs


def counter(metrics: Metrics, name: str, specs) -> float:
    """A per-stream counter summed over `specs`."""
    get = metrics.registry.get_sample_value
    return sum(get(name, {"stream": s.stream_id}) or 0.0 for s in specs)


def run_in_thread(detector, stop: threading.Event) -> threading.Thread:
    """The detector's loop on a thread named `inference` (how `StageCpu` finds it)."""
    thread = threading.Thread(target=detector.run, args=(stop,), name="inference")
    thread.start()
    return thread


def model_only(frames: list[list], backend, model_config, seconds: float) -> float:
    """Frames/s of the detector loop over frames already in memory (at most `seconds`)."""
    total = sum(len(f) for f in frames)
    sources = [f"synthetic://?duration_s=1&seed={i}" for i in range(len(frames))]  # not read
    detector, _ = make_detector(sources, backend, model_config, fast=True, buffer_frames=total + 8)
    for st, stream_frames in zip(detector.streams.values(), frames, strict=True):
        st.buffer.put(StatusEvent(st.spec.stream_id, ReaderState.CONNECTED, time.time()))
        for frame in stream_frames:
            st.buffer.put(frame)
        st.buffer.put(StatusEvent(st.spec.stream_id, ReaderState.ENDED, time.time()))
    metrics = detector.metrics
    t = time.perf_counter()
    detector.run(threading.Event(), duration_s=seconds)
    elapsed = time.perf_counter() - t
    specs = [st.spec for st in detector.streams.values()]
    done = counter(metrics, "actstream_frames_processed_total", specs)
    detector.close(publish=False)
    return done / elapsed


def end_to_end(sources, backend, model_config, seconds: float, readers: str = "thread") -> dict:
    """The detector on finite sources, unpaced, for at most `seconds` (its threads' CPU is
    sampled while they run)."""
    detector, specs = make_detector(sources, backend, model_config, fast=True, readers=readers)
    cpu, stop = StageCpu(), threading.Event()
    detector.start()
    t, before = time.perf_counter(), cpu.sample()
    thread = run_in_thread(detector, stop)
    thread.join(seconds)
    after, elapsed = cpu.sample(), time.perf_counter() - t
    done = counter(detector.metrics, "actstream_frames_processed_total", specs)
    stop.set()
    thread.join()
    detector.close(publish=False)
    return {"fps": done / elapsed, "cores": StageCpu.cores(before, after, elapsed)}


def live_trial(
    urls,
    backend,
    model_config,
    fps: float,
    *,
    duration_s: float,
    warmup_s: float,
    server_pid: int | None,
    readers: str = "thread",
) -> dict:
    """`len(urls)` live streams for `duration_s` after `warmup_s`; stops at the first drop."""
    latencies: list[tuple[float, float]] = []
    detector, specs = make_detector(
        urls,
        backend,
        model_config,
        fast=False,
        on_decision=lambda _sid, s: latencies.append((time.monotonic(), s)),
        readers=readers,
    )
    metrics, cpu = detector.metrics, StageCpu()
    stop = threading.Event()
    detector.start()
    thread = run_in_thread(detector, stop)
    every = time.monotonic() + 30.0  # each stream's first frame through the model, bounded
    while time.monotonic() < every and not stop.wait(0.2):
        get = metrics.registry.get_sample_value
        if all(get("actstream_frames_processed_total", {"stream": s.stream_id}) for s in specs):
            break
    stop.wait(warmup_s)

    def totals() -> tuple[float, float, float]:
        dropped = sum(st.buffer.dropped for st in detector.streams.values())
        return (
            counter(metrics, "actstream_frames_processed_total", specs),
            dropped,
            counter(metrics, "actstream_stream_reconnects_total", specs),
        )

    p0, d0, r0 = totals()
    c0, s0, t0 = cpu.sample(), process_cpu_s(server_pid) if server_pid else 0.0, time.monotonic()
    while time.monotonic() - t0 < duration_s and not stop.wait(0.5):
        if totals()[1] > d0:
            break  # a dropped frame: not held
    t1 = time.monotonic()
    p1, d1, r1 = totals()
    c1, s1 = cpu.sample(), process_cpu_s(server_pid) if server_pid else 0.0
    stop.set()
    thread.join()
    detector.close(publish=False)
    wall = t1 - t0
    expected = len(urls) * fps * wall
    cores = StageCpu.cores(c0, c1, wall) | (
        {"rtsp_server": round((s1 - s0) / wall, 3)} if server_pid else {}
    )
    window = [s for at, s in latencies if t0 <= at <= t1]
    held = wall >= 0.99 * duration_s and d1 == d0 and r1 == r0 and p1 - p0 >= 0.98 * expected
    return {
        "streams": len(urls),
        "seconds": round(wall, 1),
        "frames_processed": int(p1 - p0),
        "frames_expected": int(expected),
        "frames_dropped": int(d1 - d0),
        "reconnects": int(r1 - r0),
        "held": held,
        "cores": cores,
        "frame_to_decision_ms": stats_ms(window) if window else None,
    }


def capacity(live, estimate: int, max_streams: int) -> tuple[int, dict[int, dict]]:
    """The most streams `live(n)` holds: bracketed from `estimate` by steps that double, then
    bisected."""
    trials: dict[int, dict] = {}

    def held(n: int) -> bool:
        if n not in trials:
            trials[n] = r = live(n)
            print(
                f"    {n:>3} streams: processed {r['frames_processed']}/"
                f"{r['frames_expected']}, dropped {r['frames_dropped']} "
                f"-> {'held' if r['held'] else 'NOT held'}",
                file=sys.stderr,
                flush=True,
            )
        return trials[n]["held"]

    n = max(1, min(estimate, max_streams))
    step = max(1, n // 8)
    lo, hi = 0, max_streams + 1  # lo held (0: none), hi not held
    if held(n):
        lo = n
        while lo < max_streams:
            m = min(lo + step, max_streams)
            if not held(m):
                hi = m
                break
            lo, step = m, 2 * step
    else:
        hi = n
        while hi > 1:
            m = max(hi - step, 1)
            if held(m):
                lo = m
                break
            hi, step = m, 2 * step
    while hi - lo > 1 and lo < max_streams:
        m = (lo + hi) // 2
        lo, hi = (m, hi) if held(m) else (lo, m)
    return lo, trials
