"""The `actstream` command: the table of every command, the composition root of the
packages (it sits above engine/ and training/; each command module keeps its parser beside
its handler and imports what it needs only when it runs)."""

from __future__ import annotations

import argparse
import sys

import engine.cli.compile as compile_cmd
from engine.cli import keys, proxy, run, subscribe
from engine.cli.common import setup_logging
from training.commands import bench, evaluate, synth, train, tune

COMMANDS = (run, subscribe, compile_cmd, keys, proxy, synth, train, evaluate, tune, bench)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="actstream",
        description="Streaming action detection: live video in, onset/offset events out.",
    )
    parser.add_argument(
        "--log-level",
        default="warning",
        choices=["debug", "info", "warning", "error"],
        help="stderr log level (default: warning)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
