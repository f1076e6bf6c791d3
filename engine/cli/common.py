"""What every command shares: the one-line error for a user's mistake, exit codes, logging
set-up and the `--set KEY=VALUE` option.

A user's mistake ends in one line on stderr (`actstream: error: ...`) and exit status 2;
a traceback means a bug.
"""

from __future__ import annotations

import argparse
import logging
import sys

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
logger = logging.getLogger("actstream")


def fail(message: str) -> int:
    """Prints `actstream: error: ...` per line of `message` on stderr; returns EXIT_USAGE."""
    for line in message.splitlines() or [message]:
        print(f"actstream: error: {line}", file=sys.stderr, flush=True)
    return EXIT_USAGE


def say(message: str) -> None:
    """A status line for the user on stderr (stdout carries the command's output)."""
    print(f"actstream: {message}", file=sys.stderr, flush=True)


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def add_overrides(parser: argparse.ArgumentParser, example: str = "tracker.onset_threshold=0.6"):
    """The repeatable `--set KEY=VALUE` option (into `args.overrides`)."""
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override a config value, e.g. --set {example} (repeatable)",
    )
