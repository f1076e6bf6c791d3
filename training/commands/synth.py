"""`actstream synth`: synthetic action videos (or trimmed clips) with annotations."""

from __future__ import annotations

import argparse
import functools
import os

from engine.cli.common import fail


def add_parser(sub: argparse._SubParsersAction) -> None:
    synth = sub.add_parser(
        "synth",
        help="write synthetic action videos with annotations",
        description="Write H.264 mp4 videos of synthetic actions (defined by motion), or "
        "synthetic sensor recordings (--signals), and one annotations.json (ActivityNet "
        "layout) with train / validation / test subsets.",
    )
    synth.add_argument("out_dir", metavar="OUT_DIR")
    synth.add_argument("--videos", type=int, default=100, help="number of videos (default 100)")
    synth.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    synth.add_argument("--duration-s", type=float, default=60.0, help="video length (default 60)")
    synth.add_argument("--fps", type=int, default=10, help="frame rate (default 10)")
    synth.add_argument("--size", type=int, default=64, help="frame width and height (default 64)")
    synth.add_argument(
        "--split",
        choices=("train", "validation", "test"),
        help="put every video in this subset (default: 70 / 15 / 15 train / validation / test); "
        "a subset's scenes depend only on the seed, the subset and the index within it",
    )
    synth.add_argument(
        "--jobs",
        type=int,
        default=min(4, os.cpu_count() or 1),
        help="processes that encode videos in parallel (default: CPUs, at most 4); the "
        "files do not depend on it",
    )
    synth.add_argument(
        "--clips",
        type=int,
        metavar="N",
        help="write N trimmed clips (one action each, for clip recognition) instead of videos",
    )
    synth.add_argument(
        "--signals",
        type=int,
        metavar="N",
        help="write N synthetic WiFi-CSI-like recordings instead (.npy, 30 subcarriers at "
        "100 Hz, classes run, walk, jump, wave, bend, stand, sit; for signal models)",
    )
    synth.set_defaults(handler=synth_command)


def synth_command(args: argparse.Namespace) -> int:
    from training.progress import Progress
    from training.synth import write_synthetic_dataset

    if args.videos < 1 or args.duration_s <= 0 or args.fps < 1 or args.size < 16:
        return fail("synth: need --videos >= 1, --duration-s > 0, --fps >= 1, --size >= 16")
    if args.jobs < 1:
        return fail("synth: need --jobs >= 1")
    common = {"seed": args.seed, "fps": args.fps, "size": args.size, "split": args.split}
    if args.clips is not None:
        from training.clips import write_clip_dataset

        if args.clips < 1:
            return fail("synth: need --clips >= 1")
        count, what, every = args.clips, "clips", 50
        write = functools.partial(write_clip_dataset, clips=args.clips, **common)
    elif args.signals is not None:
        from training.synth import write_signal_dataset

        if args.signals < 1:
            return fail("synth: need --signals >= 1")
        count, what, every = args.signals, "recordings", 10
        write = functools.partial(
            write_signal_dataset,
            recordings=args.signals,
            seed=args.seed,
            duration_s=args.duration_s,
            split=args.split,
        )
    else:
        count, what, every = args.videos, "videos", 10
        write = functools.partial(
            write_synthetic_dataset,
            videos=args.videos,
            duration_s=args.duration_s,
            jobs=args.jobs,
            **common,
        )
    bar = Progress(count, every=every, label=what)
    path = write(args.out_dir, progress=lambda i, n: bar.update(i))
    print(f"wrote {count} {what} and {path}")
    return 0
