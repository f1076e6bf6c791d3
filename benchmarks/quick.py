"""The quick subset behind `actstream bench` (about a minute): stage costs, step vs
recompute, and 4 live streams end to end; prints one table with the targets.

    python -m benchmarks.quick [--out results/quick] [--duration-s 30] [--streams 4]
                               [--repeats 40]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
from pathlib import Path

from benchmarks import components, end_to_end, step_vs_recompute
from benchmarks.common import RESULTS


def _quiet(fn, args: list[str]) -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        if fn(args) != 0:
            raise RuntimeError(f"{fn.__module__} failed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="actstream bench", description=__doc__)
    parser.add_argument("--out", default=str(RESULTS / "quick"), help="results folder")
    parser.add_argument("--duration-s", type=float, default=30.0, help="end-to-end run length")
    parser.add_argument("--streams", type=int, default=4, help="end-to-end live streams")
    parser.add_argument(
        "--repeats",
        type=int,
        default=40,
        help="timed runs per stage cost; the step benchmark scales with it (40: 10 repeats "
        "of 500 steps at each length); fewer is faster and noisier",
    )
    parser.add_argument(
        "--backend", default="auto", choices=["auto", "torch", "onnxruntime", "tensorrt"]
    )
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    out = Path(args.out)
    print("actstream bench: stage costs ...", file=sys.stderr, flush=True)
    _quiet(
        components.main,
        ["--batches", "1", "4", "16", "--repeats", str(args.repeats), "--video-size", "240"]
        + ["--backend", args.backend, "--out", str(out)],
    )
    print("actstream bench: step vs recompute ...", file=sys.stderr, flush=True)
    _quiet(
        step_vs_recompute.main,
        [
            "--windows",
            "64",
            "512",
            "--lengths",
            "1000",
            "3000",
            "--repeats",
            str(max(2, args.repeats // 4)),
            "--sample",
            str(max(10, round(500 * args.repeats / 40))),
        ]
        + ["--out", str(out)],
    )
    print(
        f"actstream bench: {args.streams} live streams for {args.duration_s:g} s ...",
        file=sys.stderr,
        flush=True,
    )
    _quiet(
        end_to_end.main,
        ["--streams", str(args.streams), "--duration-s", str(args.duration_s)]
        + ["--backend", args.backend, "--out", str(out)],
    )
    comp = json.loads((out / "components.json").read_text())
    step = json.loads((out / "step_vs_recompute.json").read_text())
    e2e = json.loads((out / f"end_to_end_{args.streams}streams.json").read_text())
    rows = [
        (name, f"{s['p50']:.3f}", f"{s['p99']:.3f}", "") for name, s in comp["stages_ms"].items()
    ]
    rows.append(
        ("step flatness 3k/1k frames", f"{step['step_flatness']:.3f}x", "", "target <= 1.1x")
    )
    rows.append(
        (
            "step vs recompute (512 window)",
            f"{step['speedup_vs_recompute']['512']:.1f}x",
            "",
            "target >= 30x",
        )
    )
    f2e = e2e["frame_to_event_ms"] or {"p50": float("nan"), "p99": float("nan")}
    rows.append(
        (
            f"frame-to-event ms, {args.streams} streams",
            f"{f2e['p50']:.1f}",
            f"{f2e['p99']:.1f}",
            "target p99 <= 50",
        )
    )
    quality = e2e["event_quality"]
    if quality:
        r = quality["by_tiou"]["0.5"]
        rows.insert(
            0,
            (
                "event P / R / F1 at tIoU 0.5",
                f"{r['precision']:.2f} / {r['recall']:.2f}",
                f"{r['f1']:.2f}",
                f"{quality['events_per_true_action']:.2f} events per true action "
                f"({quality['true_actions']} ended)",
            ),
        )
    delay = e2e["onset_delay_s"] or {"p50": float("nan"), "p90": float("nan")}
    rows.append(
        (
            "onset delay s (p50 / p90)",
            f"{delay['p50']:.2f}",
            f"{delay['p90']:.2f}",
            "target p50 <= 0.5",
        )
    )
    rows.append(
        ("frames dropped / processed", str(e2e["frames_dropped"]), str(e2e["frames_processed"]), "")
    )
    print(f"backend: {comp['backend']}; results in {out}/")
    print(f"{'measure':<36}{'p50':>12}{'p99':>12}  note")
    for name, a, b, note in rows:
        print(f"{name:<36}{a:>12}{b:>12}  {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
