"""The `actstream` command: `run` the detector, `subscribe` to its events.

A user's mistake ends in one line on stderr (`actstream: error: ...`) and exit status 2;
a traceback means a bug.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import signal
import sys
import threading
import uuid

EXIT_USAGE = 2
logger = logging.getLogger("actstream")


def _fail(message: str) -> int:
    for line in message.splitlines() or [message]:
        print(f"actstream: error: {line}", file=sys.stderr, flush=True)
    return EXIT_USAGE


def make_parser() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    """The parser with `run` and `subscribe`, and its sub-command table (the training
    package adds `synth`, `train` and `eval` to it: `training/cli.py`)."""
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

    run = sub.add_parser(
        "run",
        help="run the detector on one or more sources",
        description="Run the detector; publishes events over ZeroMQ and prints "
        "them on stdout as 'TOPIC JSON' lines.",
    )
    run.add_argument(
        "sources",
        nargs="*",
        metavar="SOURCE",
        help="[ID=]file path, rtsp://, rtmp://, http(s)://, udp://, /dev/videoN, or "
        "synthetic:// (default: the config's sources, synthetic://demo)",
    )
    run.add_argument(
        "--config",
        help="YAML config (default: built-in defaults; configs/demo.yaml adds the bundled weights)",
    )
    run.add_argument("--weights", help="checkpoint to load (default: seeded random weights)")
    run.add_argument(
        "--zmq",
        metavar="ENDPOINT",
        help="ZeroMQ PUB endpoint to bind (default tcp://127.0.0.1:5556)",
    )
    run.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="port of http://127.0.0.1:PORT/metrics (default 9400; 0 = any free port)",
    )
    run.add_argument("--no-metrics", action="store_true", help="no metrics endpoint")
    run.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set tracker.onset_threshold=0.6 (repeatable)",
    )
    run.add_argument(
        "--fast",
        action="store_true",
        help="decode files as fast as possible instead of at their own frame rate",
    )
    run.add_argument("--duration-s", type=float, metavar="S", help="stop after S seconds")
    run.add_argument("--quiet", action="store_true", help="do not print published messages")

    subp = sub.add_parser(
        "subscribe",
        help="print a detector's events",
        description="Print messages from a detector as 'TOPIC JSON' lines; "
        "report sequence gaps (missed messages) on stderr.",
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
        choices=["onset", "offset", "status", "heartbeat"],
        help="only this message type (repeatable)",
    )
    subp.add_argument("--count", type=int, metavar="N", help="exit after N messages")
    subp.add_argument(
        "--timeout-s", type=float, metavar="S", help="exit after S seconds without a message"
    )
    return parser, sub


def build_parser() -> argparse.ArgumentParser:
    return make_parser()[0]


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def dispatch(args: argparse.Namespace) -> int:
    if args.command == "run":
        return run_command(args)
    return subscribe_command(args)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    return dispatch(args)


def run_command(args: argparse.Namespace) -> int:
    from engine.checkpoint import CheckpointError, load_checkpoint
    from engine.config import ConfigError, load_config
    from engine.detector import StartupError, build_detector
    from engine.metrics import Metrics, MetricsPortError
    from engine.publisher import PublisherError
    from engine.runtime import TorchBackend
    from models.action_model import build_model
    from stream.sources import SourceError, parse_sources

    overrides = list(args.overrides)
    if args.weights:
        overrides.append(f"weights={json.dumps(args.weights)}")
    if args.zmq:
        overrides.append(f"publisher.endpoint={json.dumps(args.zmq)}")
    if args.no_metrics:
        overrides.append("metrics.port=null")
    elif args.metrics_port is not None:
        overrides.append(f"metrics.port={args.metrics_port}")
    if args.fast:
        overrides.append("stream.realtime=false")
    try:
        config = load_config(args.config, overrides)
        specs = parse_sources(args.sources or list(config.sources))
    except (ConfigError, SourceError) as exc:
        return _fail(str(exc))

    if config.weights:
        try:
            model, model_config, step = load_checkpoint(config.weights, config.engine.device)
        except CheckpointError as exc:
            return _fail(str(exc))
        config = dataclasses.replace(config, model=model_config)
        logger.info(
            "loaded %s (step %d, classes %s)", config.weights, step, ", ".join(model_config.classes)
        )
    else:
        model = build_model(config.model)
        logger.info(
            "no --weights: model starts from a seeded random initialisation (seed %d)",
            config.model.seed,
        )
    try:
        backend = TorchBackend(model, config.engine.device)
    except (RuntimeError, AssertionError) as exc:
        return _fail(f"engine.device {config.engine.device!r}: {str(exc).splitlines()[0]}")

    metrics = Metrics()
    if config.metrics.port is not None:
        try:
            metrics.serve(config.metrics.host, config.metrics.port)
        except MetricsPortError as exc:
            return _fail(str(exc))

    out_lock = threading.Lock()

    def print_message(topic: str, payload: bytes, _message: object) -> None:
        with out_lock:
            sys.stdout.write(f"{topic} {payload.decode()}\n")
            sys.stdout.flush()

    detector = build_detector(
        specs,
        config,
        backend,
        run_id=uuid.uuid4().hex[:8],
        metrics=metrics,
        on_sent=None if args.quiet else print_message,
    )
    try:
        endpoint = detector.publisher.start()
    except PublisherError as exc:
        metrics.close()
        return _fail(str(exc))
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        logger.info("%s: shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        detector.start()
    except StartupError as exc:
        return _fail(str(exc))
    metrics_url = f"http://{config.metrics.host}:{metrics.port}/metrics" if metrics.port else "off"
    weights = config.weights or f"none (seeded random init, seed {config.model.seed})"
    print(
        f"actstream: running {len(specs)} stream(s): "
        f"{', '.join(f'{s.stream_id}={s.display}' for s in specs)}; weights: {weights}; "
        f"events: {endpoint} (actstream subscribe --zmq {endpoint}); metrics: {metrics_url}; "
        "Ctrl-C stops",
        file=sys.stderr,
        flush=True,
    )
    try:
        detector.run(stop, duration_s=args.duration_s)
    finally:
        detector.close()
    return 0


def subscribe_command(args: argparse.Namespace) -> int:
    import zmq

    from engine.subscriber import Subscriber

    try:
        sub = Subscriber(args.zmq, streams=args.stream, labels=args.label, types=args.type)
    except (zmq.ZMQError, ValueError) as exc:
        return _fail(f"{args.zmq}: cannot subscribe ({exc})")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    received = 0
    try:
        while not stop.is_set():
            item = sub.receive(args.timeout_s if args.timeout_s is not None else 0.5)
            if item is None:
                if args.timeout_s is not None:
                    break
                continue
            topic, message, gap = item
            if gap is not None:
                print(
                    f"actstream: gap: stream {gap.stream or '(heartbeat)'} missed {gap.missed} "
                    f"message(s) (seq {gap.first}..{gap.last}, run {gap.run_id})",
                    file=sys.stderr,
                    flush=True,
                )
            sys.stdout.write(f"{topic} {json.dumps(message, separators=(',', ':'))}\n")
            sys.stdout.flush()
            received += 1
            if args.count is not None and received >= args.count:
                break
    except KeyboardInterrupt:
        pass
    except ValueError as exc:
        return _fail(f"{args.zmq}: malformed message ({exc})")
    finally:
        sub.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
