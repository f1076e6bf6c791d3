"""Capacity: the most concurrent 10-fps live streams this machine holds in real time — every
frame processed, none dropped, for the whole run (a minute by default).

    python -m benchmarks.capacity [--start 4] [--duration-s 60] [--fps 10] [--backend auto]

Doubles the stream count until a run drops frames, then bisects between the last count held
and the first that was not.
"""

from __future__ import annotations

import argparse
import sys

from benchmarks.common import figure, save
from benchmarks.end_to_end import add_run_args, run_with


def held(trial: dict) -> bool:
    return (
        trial["frames_dropped"] == 0
        and trial["frames_processed"] >= 0.98 * trial["frames_expected"]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.capacity", description=__doc__)
    parser.add_argument("--start", type=int, default=4, help="first stream count tried")
    parser.add_argument("--max-streams", type=int, default=256)
    add_run_args(parser)
    args = parser.parse_args(argv)
    trials: dict[int, dict] = {}

    def trial(n: int) -> bool:
        if n not in trials:
            r = run_with(args, n)
            r.pop("_f2e")
            trials[n] = r
            f2e = r["frame_to_event_ms"] or {}
            print(
                f"{n:>4} streams: processed {r['frames_processed']}/{r['frames_expected']}, "
                f"dropped {r['frames_dropped']}, "
                f"frame-to-event p99 {f2e.get('p99', float('nan')):.1f} ms "
                f"-> {'held' if held(r) else 'NOT held'}",
                file=sys.stderr,
                flush=True,
            )
        return held(trials[n])

    good, bad = 0, None
    n = max(1, args.start)
    while n <= args.max_streams:
        if trial(n):
            good, n = n, n * 2
        else:
            bad = n
            break
    if bad is not None:
        lo, hi = good, bad
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if trial(mid) else (lo, mid)
        good = lo
    backend = next(iter(trials.values()))["backend"]
    print(
        f"capacity: {good} streams at {args.fps:g} fps held in real time "
        f"for {args.duration_s:g} s ({backend})"
    )
    result = {
        "capacity_streams": good,
        "fps": args.fps,
        "duration_s": args.duration_s,
        "backend": backend,
        "trials": {str(k): v for k, v in sorted(trials.items())},
    }
    path = save("capacity", result, args.out)
    with figure(path.with_suffix(".png")) as (_, ax):
        ns = sorted(trials)
        ax.plot(
            ns,
            [trials[k]["frames_processed"] / max(trials[k]["frames_expected"], 1) for k in ns],
            marker="o",
        )
        ax.axhline(0.98, color="gray", linestyle="--")
        ax.set_xlabel("concurrent streams")
        ax.set_ylabel("frames processed / expected")
        ax.set_title(f"Capacity at {args.fps:g} fps: {good} streams ({backend})")
    print(f"wrote {path} and {path.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
