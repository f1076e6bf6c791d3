"""`actstream bench`: the quick latency/throughput benchmark (about a minute)."""

from __future__ import annotations

import argparse

from engine.cli.common import fail


def add_parser(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser(
        "bench",
        help="quick latency/throughput benchmark (about a minute)",
        description="Stage costs, FastBack step vs recompute, and live streams end to end "
        "with a subscriber in another process; prints a table with the targets. The full "
        "benchmarks are python -m benchmarks.<name> (README, Benchmarks).",
    )
    bench.add_argument("--out", default="results/quick", help="results folder")
    bench.add_argument("--duration-s", type=float, default=30.0, help="end-to-end run length")
    bench.add_argument("--streams", type=int, default=4, help="end-to-end live streams")
    bench.add_argument(
        "--repeats",
        type=int,
        default=40,
        help="timed runs per stage cost; the step benchmark scales with it",
    )
    bench.add_argument(
        "--backend", default="auto", choices=["auto", "torch", "onnxruntime", "tensorrt"]
    )
    bench.set_defaults(handler=bench_command)


def bench_command(args: argparse.Namespace) -> int:
    # The declared exception to the package boundaries (tests/test_boundaries.py): the
    # benchmarks sit above every package, and this command only starts them.
    from benchmarks.quick import main as quick

    if args.duration_s <= 0 or args.streams < 1 or args.repeats < 1:
        return fail("bench: need --duration-s > 0, --streams >= 1 and --repeats >= 1")
    argv = ["--out", args.out, "--duration-s", str(args.duration_s), "--repeats", str(args.repeats)]
    return quick([*argv, "--streams", str(args.streams), "--backend", args.backend])
