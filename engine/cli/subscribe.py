"""`actstream subscribe`: a detector's messages as 'TOPIC JSON' lines; gaps on stderr."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time

from engine.cli.common import fail, say

QUIET_S = 5.0  # a detector sends a heartbeat every second: this long with nothing is a problem


def nothing_arrived(endpoint: str, seconds: float, curve: bool) -> str:
    hint = (
        "the detector's public key (--curve-server-key) or this subscriber's key pair may be "
        "wrong, or its public key not in the detector's --curve-clients"
        if curve
        else "if the detector encrypts (CURVE), give --curve-server-key and --curve-client-key"
    )
    return f"nothing from {endpoint} in {seconds:.0f} s: is a detector running there? ({hint})"


def add_parser(sub: argparse._SubParsersAction) -> None:
    subp = sub.add_parser(
        "subscribe",
        help="print a detector's events",
        description="Print messages from a detector as 'TOPIC JSON' lines; "
        "report sequence gaps (missed messages) on stderr. Says on stderr when nothing "
        "arrives in the first 5 s (or within --timeout-s), and then exits 1 with --timeout-s.",
    )
    subp.add_argument(
        "--zmq",
        metavar="ENDPOINT",
        default="tcp://127.0.0.1:5556",
        help="detector endpoint to connect to (default tcp://127.0.0.1:5556)",
    )
    subp.add_argument("--stream", action="append", default=[], help="only this stream (repeatable)")
    subp.add_argument("--label", action="append", default=[], help="only this label (repeatable)")
    subp.add_argument(
        "--type",
        action="append",
        default=[],
        choices=["onset", "offset", "status", "clip", "heartbeat"],
        help="only this message type (repeatable)",
    )
    subp.add_argument(
        "--curve-server-key",
        metavar="NAME.key",
        help="the detector's CURVE public key (with --curve-client-key)",
    )
    subp.add_argument(
        "--curve-client-key",
        metavar="NAME.key_secret",
        help="this subscriber's CURVE key pair (from actstream keys)",
    )
    subp.add_argument(
        "--hwm",
        type=int,
        default=100_000,
        metavar="N",
        help="messages queued while this subscriber is not reading before ZeroMQ drops "
        "(reported as gaps; default 100000)",
    )
    subp.add_argument("--count", type=int, metavar="N", help="exit after N messages")
    subp.add_argument(
        "--timeout-s", type=float, metavar="S", help="exit after S seconds without a message"
    )
    subp.set_defaults(handler=subscribe_command)


def subscribe_command(args: argparse.Namespace) -> int:
    import zmq

    from engine.wire.security import KeyFileError
    from engine.wire.subscriber import Subscriber

    try:
        sub = Subscriber(
            args.zmq,
            streams=args.stream,
            labels=args.label,
            types=args.type,
            curve_server_key=args.curve_server_key,
            curve_client_key=args.curve_client_key,
            receive_hwm=args.hwm,
        )
    except KeyFileError as exc:
        return fail(str(exc))
    except (zmq.ZMQError, ValueError) as exc:
        return fail(f"{args.zmq}: cannot subscribe ({exc})")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    received, started, warned = 0, time.monotonic(), False
    curve = bool(args.curve_server_key or args.curve_client_key)
    try:
        while not stop.is_set():
            item = sub.receive(args.timeout_s if args.timeout_s is not None else 0.5)
            if item is None:
                quiet = time.monotonic() - started
                if not received and not warned and (quiet >= QUIET_S or args.timeout_s):
                    say(nothing_arrived(args.zmq, quiet, curve))
                    warned = True
                if args.timeout_s is not None:
                    break
                continue
            topic, message, gap = item
            if gap is not None:
                say(
                    f"gap: stream {gap.stream or '(heartbeat)'} missed {gap.missed} "
                    f"message(s) (seq {gap.first}..{gap.last}, run {gap.run_id})"
                )
            sys.stdout.write(f"{topic} {json.dumps(message, separators=(',', ':'))}\n")
            sys.stdout.flush()
            received += 1
            if args.count is not None and received >= args.count:
                break
    except KeyboardInterrupt:
        pass
    except ValueError as exc:
        return fail(f"{args.zmq}: malformed message ({exc})")
    finally:
        sub.close()
    return 0 if received or args.timeout_s is None else 1
