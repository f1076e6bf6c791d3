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
        "--engine",
        metavar="ENGINE_DIR",
        help="compiled engine directory to run (from actstream compile) instead of --weights",
    )
    run.add_argument(
        "--backend",
        choices=["auto", "tensorrt", "onnxruntime", "torch"],
        help="backend for --weights (default auto: tensorrt on a GPU if installed, else torch; "
        "onnxruntime on the CPU if installed, else torch)",
    )
    run.add_argument(
        "--precision",
        choices=["auto", "fp32", "fp16"],
        help="model precision (default auto: fp16 for tensorrt, else fp32; fp16 needs CUDA)",
    )
    run.add_argument("--device", help="torch device: cpu (default), cuda, cuda:1")
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
        "--curve-secret-key",
        metavar="NAME.key_secret",
        help="encrypt events with ZeroMQ CURVE using this key pair (from actstream keys)",
    )
    run.add_argument(
        "--curve-clients",
        metavar="DIR",
        help="with CURVE, accept only subscribers whose public keys (*.key) are in DIR",
    )
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

    keys = sub.add_parser(
        "keys",
        help="generate a ZeroMQ CURVE key pair",
        description="Write DIR/NAME.key (public: give it to the other side) and "
        "DIR/NAME.key_secret (keep it; mode 0600). The detector uses its NAME.key_secret with "
        "run --curve-secret-key; each subscriber uses its own with subscribe "
        "--curve-client-key plus the detector's NAME.key with --curve-server-key.",
    )
    keys.add_argument("directory", metavar="DIR", help="where to write the key files")
    keys.add_argument("--name", default="actstream", help="file name stem (default actstream)")

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

    comp = sub.add_parser(
        "compile",
        help="compile a checkpoint into an engine directory",
        description="Compile a checkpoint for a backend into ENGINE_DIR (manifest.json plus the "
        "backend's artifacts), then check the compiled graphs against eager PyTorch.",
    )
    comp.add_argument("checkpoint", metavar="CHECKPOINT", help=".pt file from actstream train")
    comp.add_argument("--out", required=True, metavar="ENGINE_DIR", help="directory to write")
    comp.add_argument(
        "--backend",
        default="auto",
        choices=["auto", "tensorrt", "onnxruntime", "torch"],
        help="target backend (default auto: the best that runs on --device here)",
    )
    comp.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "fp16"],
        help="fp16 (needs CUDA; the model is cast to half before compiling) or fp32 "
        "(default auto: fp16 for tensorrt, else fp32)",
    )
    comp.add_argument(
        "--max-batch",
        type=int,
        default=32,
        metavar="N",
        help="largest backbone batch (frames across streams) the engine accepts (default 32)",
    )
    comp.add_argument(
        "--device",
        help="device to compile on and for (default: cuda for tensorrt, else cpu)",
    )
    comp.add_argument(
        "--standalone-engine",
        action="store_true",
        help="tensorrt: also write backbone.engine, a serialized TensorRT engine run with the "
        "tensorrt runtime API",
    )
    comp.add_argument(
        "--no-verify", action="store_true", help="skip the check against eager PyTorch"
    )

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
    if args.command in ("compile", "keys", "proxy"):
        from engine import commands

        return getattr(commands, f"{args.command}_command")(args)
    return subscribe_command(args)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    return dispatch(args)


def run_command(args: argparse.Namespace) -> int:
    from engine.backends.base import BackendError
    from engine.backends.manifest import EngineError
    from engine.checkpoint import CheckpointError
    from engine.config import load_config
    from engine.detector import StartupError, build_detector
    from engine.loader import ConfigError
    from engine.metrics import Metrics, MetricsPortError
    from engine.wire.publisher import PublisherError
    from engine.wire.security import KeyFileError
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
    for flag, key in (("engine", "engine_dir"), ("backend", "backend"), ("precision", "precision")):
        if getattr(args, flag):
            overrides.append(f"engine.{key}={json.dumps(getattr(args, flag))}")
    if args.device:
        overrides.append(f"engine.device={json.dumps(args.device)}")
    if args.curve_secret_key:
        overrides.append(f"publisher.curve_secret_key={json.dumps(args.curve_secret_key)}")
    if args.curve_clients:
        overrides.append(f"publisher.curve_clients_dir={json.dumps(args.curve_clients)}")
    try:
        config = load_config(args.config, overrides)
        specs = parse_sources(args.sources or list(config.sources))
    except (ConfigError, SourceError) as exc:
        return _fail(str(exc))
    try:
        config, backend = _load_backend(config)
    except (CheckpointError, EngineError, BackendError) as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:  # Ctrl-C while the weights compile on a first start
        print("actstream: interrupted during start-up", file=sys.stderr, flush=True)
        return 130
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

    try:
        detector = build_detector(
            specs,
            config,
            backend,
            run_id=uuid.uuid4().hex[:8],
            metrics=metrics,
            on_sent=None if args.quiet else print_message,
        )
    except KeyFileError as exc:
        metrics.close()
        return _fail(str(exc))
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
    weights = (
        config.engine.engine_dir
        or config.weights
        or f"none (seeded random init, seed {config.model.seed})"
    )
    print(
        f"actstream: running {len(specs)} stream(s): "
        f"{', '.join(f'{s.stream_id}={s.display}' for s in specs)}; weights: {weights}; "
        f"backend: {backend.describe()}; "
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


def _load_backend(config):
    """The model's backend for `actstream run`: an engine directory, or weights (or the
    seeded random initialisation) on the chosen backend. Returns the config with the
    model section of what was loaded."""
    from engine.backends.base import BackendError
    from engine.backends.cache import prepare_backend
    from engine.backends.compile import load_engine
    from engine.checkpoint import load_checkpoint
    from models.action_model import build_model

    e = config.engine
    options = dict(
        device=e.device, torch_compile=e.torch_compile, cuda_graphs=e.cuda_graphs, threads=e.threads
    )
    if e.engine_dir:
        if config.weights:
            raise BackendError("give --engine or --weights, not both")
        backend, manifest = load_engine(e.engine_dir, **options)
        for key, wanted, actual in (
            ("backend", e.backend, manifest.backend),
            ("precision", e.precision, manifest.precision),
        ):
            if wanted not in ("auto", actual):
                raise BackendError(
                    f"{e.engine_dir}: compiled for {key} {actual}, but {key} {wanted} was asked "
                    f"for; recompile with actstream compile --{key} {wanted}"
                )
        logger.info("loaded engine %s (%s)", e.engine_dir, backend.describe())
        return dataclasses.replace(config, model=manifest.model), backend
    if config.weights:
        model, model_config, step = load_checkpoint(config.weights, "cpu")
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
    backend = prepare_backend(
        model,
        config.model,
        backend=e.backend,
        precision=e.precision,
        max_batch=e.max_batch,
        **options,
    )
    logger.info("backend: %s", backend.describe())
    return config, backend


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
        return _fail(str(exc))
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
