"""`actstream synth`: synthetic action videos (or trimmed clips) with annotations."""

from __future__ import annotations

import argparse
import functools

from engine.cli.common import fail


def add_parser(sub: argparse._SubParsersAction) -> None:
    synth = sub.add_parser(
        "synth",
        help="write synthetic action videos with annotations",
        description="Write H.264 mp4 videos of synthetic actions (defined by motion) and one "
        "annotations.json (ActivityNet layout) with train / validation / test subsets.",
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
        "--clips",
        type=int,
        metavar="N",
        help="write N trimmed clips (one action each, for clip recognition) instead of videos",
    )
    synth.set_defaults(handler=synth_command)


def synth_command(args: argparse.Namespace) -> int:
    from training.progress import Progress
    from training.synth import write_synthetic_dataset

    if args.videos < 1 or args.duration_s <= 0 or args.fps < 1 or args.size < 16:
        return fail("synth: need --videos >= 1, --duration-s > 0, --fps >= 1, --size >= 16")
    common = {"seed": args.seed, "fps": args.fps, "size": args.size, "split": args.split}
    if args.clips is not None:
        from training.clips import write_clip_dataset

        if args.clips < 1:
            return fail("synth: need --clips >= 1")
        count, what, every = args.clips, "clips", 50
        write = functools.partial(write_clip_dataset, clips=args.clips, **common)
    else:
        count, what, every = args.videos, "videos", 10
        write = functools.partial(
            write_synthetic_dataset, videos=args.videos, duration_s=args.duration_s, **common
        )
    bar = Progress(count, every=every)
    path = write(args.out_dir, progress=lambda i, n: bar.update(i))
    print(f"wrote {count} {what} and {path}")
    return 0
