"""`actstream proxy`: several detectors' events republished on one endpoint."""

from __future__ import annotations

import argparse
import signal
import threading

from engine.cli.common import fail, logger, say


def add_parser(sub: argparse._SubParsersAction) -> None:
    prox = sub.add_parser(
        "proxy",
        help="fan in the events of several detectors on one endpoint",
        description="Connect to several detectors' event endpoints and republish everything "
        "on one (ZeroMQ XSUB/XPUB); subscribers connect to --bind as to a detector.",
    )
    prox.add_argument(
        "--upstream",
        action="append",
        required=True,
        metavar="ENDPOINT",
        help="a detector's event endpoint, e.g. tcp://10.0.0.7:5556 (repeatable)",
    )
    prox.add_argument(
        "--bind",
        default="tcp://127.0.0.1:5570",
        metavar="ENDPOINT",
        help="endpoint subscribers connect to (default tcp://127.0.0.1:5570)",
    )
    prox.set_defaults(handler=proxy_command)


def proxy_command(args: argparse.Namespace) -> int:
    from engine.wire.proxy import Proxy, ProxyError

    try:
        proxy = Proxy(args.upstream, args.bind)
    except ProxyError as exc:
        return fail(str(exc))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    say(
        f"proxy {', '.join(args.upstream)} -> {proxy.endpoint} "
        f"(actstream subscribe --zmq {proxy.endpoint}); Ctrl-C stops"
    )
    try:
        proxy.run(stop)
    finally:
        proxy.close()
    logger.info("proxy forwarded %d messages", proxy.forwarded)
    return 0
