"""Streaming vs recompute: the per-frame cost of FastBack's `step()` (fixed-size cache) against
recomputing the temporal encoder over the whole window for every new frame, for windows of
64 … 2048 frames; and `step()`'s cost as the stream grows from 1k to 100k frames.

    python -m benchmarks.step_vs_recompute [--windows 64 128 256 512 1024 2048]
        [--lengths 1000 10000 100000] [--repeats 30] [--sample 500]

Targets (README, "Benchmarks"): step cost flat in stream length (≤ 1.1× between 1k and 100k
frames) and ≥ 30× cheaper than recomputing a 512-frame window.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

import torch

from benchmarks.common import RESULTS, figure, save, stats_ms, time_calls
from models.action_model import ModelConfig
from models.fastback import FastBackEncoder


def encoder(config: ModelConfig) -> FastBackEncoder:
    torch.manual_seed(0)
    return FastBackEncoder(config.temporal, in_dim=config.backbone.feature_dim).eval()


@torch.inference_mode()
def recompute_ms(enc: FastBackEncoder, window: int, in_dim: int, repeats: int) -> dict:
    """One new frame → the encoder over the last `window` frames (the output for the newest
    frame is the last row): what a detector without a cache would do per frame."""
    x = torch.randn(1, window, in_dim)
    return stats_ms(time_calls(lambda: enc(x)[:, -1], repeats=repeats))


@torch.inference_mode()
def step_over_length(
    enc: FastBackEncoder, in_dim: int, lengths: list[int], sample: int
) -> dict[int, dict]:
    """Steps one stream through max(lengths) frames; the cost of the `sample` steps ending at
    each length (every step is taken, so the cache really holds that stream's state)."""
    cache = enc.init_cache(1)
    xs = torch.randn(256, 1, in_dim)
    out: dict[int, dict] = {}
    marks = {n: max(n - sample, 0) for n in lengths}
    timed: list[float] = []
    for i in range(1, max(lengths) + 1):
        x = xs[i % 256]
        if any(start < i <= n for n, start in marks.items()):
            t = time.perf_counter()
            _, cache = enc.step(x, cache)
            timed.append(time.perf_counter() - t)
        else:
            _, cache = enc.step(x, cache)
        if i in marks:
            out[i] = stats_ms(timed)
            timed = []
        if i % 10000 == 0:
            print(f"  step: {i} frames", file=sys.stderr, flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.step_vs_recompute", description=__doc__
    )
    parser.add_argument("--windows", type=int, nargs="+", default=[64, 128, 256, 512, 1024, 2048])
    parser.add_argument("--lengths", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--sample", type=int, default=500, help="steps timed at each length")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (default 1: one stream's share)"
    )
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = ModelConfig()
    in_dim = config.backbone.feature_dim
    enc = encoder(config)
    recompute = {}
    for w in args.windows:
        recompute[w] = recompute_ms(enc, w, in_dim, args.repeats)
        print(f"recompute window {w:>5}: p50 {recompute[w]['p50']:.3f} ms", file=sys.stderr)
    lengths = sorted(args.lengths)
    steps = step_over_length(enc, in_dim, lengths, min(args.sample, lengths[0]))
    step_p50 = {n: s["p50"] for n, s in steps.items()}
    flatness = step_p50[lengths[-1]] / step_p50[lengths[0]]
    ref_window = 512 if 512 in recompute else args.windows[-1]
    speedup = {w: recompute[w]["p50"] / step_p50[lengths[0]] for w in args.windows}
    result = {
        "config": {
            "temporal": dataclasses.asdict(config.temporal),
            "in_dim": in_dim,
            "threads": args.threads,
        },
        "recompute_ms": {str(w): s for w, s in recompute.items()},
        "step_ms": {str(n): s for n, s in steps.items()},
        "step_flatness": flatness,
        "speedup_vs_recompute": {str(w): v for w, v in speedup.items()},
        "targets": {
            "step_flat_max_ratio": 1.1,
            "step_flat_met": flatness <= 1.1,
            "speedup_window": ref_window,
            "speedup_min": 30.0,
            "speedup_met": speedup[ref_window] >= 30.0,
        },
    }
    print(f"{'window':>8} {'recompute p50 ms':>18} {'step p50 ms':>12} {'speedup':>8}")
    for w in args.windows:
        print(
            f"{w:>8} {recompute[w]['p50']:>18.3f} {step_p50[lengths[0]]:>12.3f} {speedup[w]:>7.1f}x"
        )
    for n in lengths:
        print(f"step at {n:>7} frames: p50 {step_p50[n]:.3f} ms")
    print(
        f"step flatness {lengths[-1]}/{lengths[0]}: {flatness:.3f}x; "
        f"speedup at {ref_window}: {speedup[ref_window]:.1f}x"
    )
    path = save("step_vs_recompute", result, args.out)
    with figure(path.with_suffix(".png")) as (_, ax):
        ax.plot(
            args.windows,
            [recompute[w]["p50"] for w in args.windows],
            marker="o",
            label="recompute window",
        )
        ax.plot(
            args.windows,
            [step_p50[lengths[0]]] * len(args.windows),
            marker="s",
            label="step() (cache)",
        )
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("window (frames)")
        ax.set_ylabel("p50 ms per new frame")
        ax.set_title("FastBack per-frame cost: step vs recompute")
        ax.legend()
    print(f"wrote {path} and {path.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
