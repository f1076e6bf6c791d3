"""The `actstream` command: the table of every command, the composition root of the
packages (it sits above engine/ and training/; each command module keeps its parser beside
its handler and imports what it needs only when it runs)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

import engine.cli.compile as compile_cmd
from engine.cli import events, keys, proxy, run, subscribe
from engine.cli.common import EXIT_INTERRUPTED, say, setup_logging
from training.commands import bench, datasets, evaluate, synth, train, tune

COMMANDS = (
    run,
    subscribe,
    events,
    compile_cmd,
    keys,
    proxy,
    synth,
    datasets,
    train,
    evaluate,
    tune,
    bench,
)


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


def _terminate(signum: int, _frame: object) -> None:
    """SIGTERM (systemd, Docker, `timeout`) acts as Ctrl-C until a command installs its own
    handling: whatever is half-done is undone on the way out."""
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _terminate)
    try:
        args = build_parser().parse_args(argv)
        setup_logging(args.log_level)
        return args.handler(args)
    except KeyboardInterrupt:  # a command without handling of its own, or while importing
        say("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader of our output went away (`| head`): nothing to say
        return 0


def entry() -> None:
    """The `actstream` program: `main`, then an immediate exit once the output is flushed.
    Every command has closed what it opened when `main` returns; the interpreter's own
    teardown (torch's native libraries, garbage collection of the model) would take seconds,
    and a reader abandoned in a read of a frozen source could hold it longer still."""
    code = main()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass  # a closed pipe: nothing more can be said
    os._exit(code)


if __name__ == "__main__":
    entry()
