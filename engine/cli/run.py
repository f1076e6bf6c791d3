"""`actstream run`: the detector on one or more sources; events on ZeroMQ and stdout."""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
import threading
import uuid

from engine.backends.names import BACKENDS, PRECISIONS
from engine.cli.common import add_overrides, fail, logger, say


def add_parser(sub: argparse._SubParsersAction) -> None:
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
        "synthetic:// (default: the config's sources, synthetic://demo); for a signal model "
        "a .npy / .csv recording[?rate=HZ], lsl://NAME, zmq+tcp://HOST:PORT or "
        "serial:///dev/PORT[?baud=N]",
    )
    run.add_argument(
        "--config",
        help="YAML config (default: built-in defaults; configs/demo.yaml adds the bundled weights)",
    )
    run.add_argument(
        "--weights",
        help="checkpoint to load (default: the bundled demo model, configs/weights/demo.pt)",
    )
    run.add_argument(
        "--random-init",
        action="store_true",
        help="start from seeded random weights instead (weights: null)",
    )
    run.add_argument(
        "--engine",
        metavar="ENGINE_DIR",
        help="compiled engine directory to run (from actstream compile) instead of --weights",
    )
    run.add_argument(
        "--backend",
        choices=["auto", *BACKENDS],
        help="backend for --weights (default auto: tensorrt on a GPU if installed, else torch; "
        "onnxruntime on the CPU if installed, else torch; openvino by name)",
    )
    run.add_argument(
        "--precision",
        choices=["auto", *PRECISIONS],
        help="model precision (default auto: fp16 for tensorrt, else fp32; fp16 needs CUDA; "
        "bf16 on the CPU with torch or openvino; int8 only from a compiled --engine)",
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
        "--store",
        metavar="PATH|URL",
        help="event store to write every event into: an SQLite file (default runs/events.db) "
        "or a postgresql:// URL (store.url); actstream events reads it",
    )
    run.add_argument("--no-store", action="store_true", help="keep no event store")
    run.add_argument(
        "--clips",
        metavar="DIR",
        help="folder for each action's evidence clip and snapshot (default runs/clips)",
    )
    run.add_argument("--no-clips", action="store_true", help="cut no evidence clips or snapshots")
    run.add_argument(
        "--mqtt",
        metavar="URL",
        help="also publish every event to this MQTT broker, mqtt://HOST[:PORT], on "
        "actstream/<stream>/<type> (mqtt.* in the config: QoS, prefix, discovery)",
    )
    run.add_argument(
        "--http-port",
        type=int,
        metavar="PORT",
        help="serve the HTTP API (/api/events, /api/streams, /healthz) on "
        "http://127.0.0.1:PORT (default: off; 0 = any free port)",
    )
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
    add_overrides(run)
    run.add_argument(
        "--fast",
        action="store_true",
        help="decode files as fast as possible instead of at their own frame rate",
    )
    run.add_argument("--duration-s", type=float, metavar="S", help="stop after S seconds")
    run.add_argument("--quiet", action="store_true", help="do not print published messages")
    run.add_argument(
        "--show-truth",
        action="store_true",
        help="for synthetic:// streams, print each true action as it starts and ends, and a "
        "summary every 10 s of stream time (events so far, matched, false, missed) to stderr",
    )
    run.set_defaults(handler=run_command)


def _overrides(args: argparse.Namespace) -> list[str]:
    """The command line's options as config overrides, then the user's own `--set`s (an
    error in a `--set` names what the user typed, never an option's translation)."""
    from engine.store.schema import is_url

    overrides: list[str] = []
    if args.weights:
        overrides.append(f"weights={json.dumps(args.weights)}")
    elif args.random_init:
        overrides.append("weights=null")
    if args.zmq:
        overrides.append(f"publisher.endpoint={json.dumps(args.zmq)}")
    if args.no_metrics:
        overrides.append("metrics.port=null")
    elif args.metrics_port is not None:
        overrides.append(f"metrics.port={args.metrics_port}")
    if args.mqtt:
        overrides.append(f"mqtt.url={json.dumps(args.mqtt)}")
    if args.http_port is not None:
        overrides.append(f"http.port={args.http_port}")
    if args.no_store:
        overrides += ["store.path=null", "store.url=null"]
    elif args.store and is_url(args.store):
        overrides.append(f"store.url={json.dumps(args.store)}")
    elif args.store:
        overrides += [f"store.path={json.dumps(args.store)}", "store.url=null"]
    if args.no_clips:
        overrides.append("clips.enabled=false")
    elif args.clips:
        overrides.append(f"clips.dir={json.dumps(args.clips)}")
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
    return overrides + list(args.overrides)


def run_command(args: argparse.Namespace) -> int:
    """`actstream run`; SIGINT or SIGTERM at any point exits 0 (a stop asked for is not a
    failure), within seconds, with every stream's last status `stopped`."""
    try:
        return _run(args)
    except KeyboardInterrupt:  # before the detector's own handlers: importing, compiling
        say("interrupted during start-up; nothing was left half-written")
        return 0


def _run(args: argparse.Namespace) -> int:
    from engine.api import HttpPortError
    from engine.backbones import BackboneError
    from engine.backends.base import BackendError
    from engine.backends.manifest import EngineError
    from engine.build import build_detector
    from engine.checkpoint import CheckpointError
    from engine.cli.outputs import Outputs, start_api, start_event_outputs
    from engine.config import load_config
    from engine.detector import StartupError
    from engine.loader import ConfigError
    from engine.metrics import Metrics, MetricsPortError
    from engine.store.schema import StoreError
    from engine.wire.publisher import PublisherError
    from engine.wire.security import KeyFileError
    from stream.sources import SourceError, parse_sources

    try:
        config = load_config(args.config, _overrides(args))
        specs = parse_sources(args.sources or list(config.sources))
    except (ConfigError, SourceError) as exc:
        return fail(str(exc))
    try:
        config, backend = load_backend(config)
    except (CheckpointError, EngineError, BackendError, BackboneError) as exc:
        return fail(str(exc))
    except (RuntimeError, AssertionError) as exc:
        return fail(f"engine.device {config.engine.device!r}: {str(exc).splitlines()[0]}")

    metrics = Metrics()
    if config.metrics.port is not None:
        try:
            metrics.serve(config.metrics.host, config.metrics.port)
        except MetricsPortError as exc:
            return fail(str(exc))

    out_lock = threading.Lock()

    def print_message(topic: str, payload: bytes, _message: object) -> None:
        with out_lock:
            sys.stdout.write(f"{topic} {payload.decode()}\n")
            sys.stdout.flush()

    outputs = Outputs(sinks=[] if args.quiet else [print_message])
    truth = None
    if args.show_truth:
        try:
            truth = truth_monitor(specs, config, out_lock)
        except SourceError as exc:
            metrics.close()
            return fail(str(exc))
        if truth is None:
            say("--show-truth: no synthetic:// stream, nothing to show")
        else:
            outputs.sinks.append(truth.on_message)

    weights = (
        config.engine.engine_dir
        or config.weights
        or f"none (seeded random init, seed {config.model.seed})"
    )
    run_id = uuid.uuid4().hex[:8]
    streams = [s.stream_id for s in specs]
    try:
        start_event_outputs(outputs, config, streams, run_id, weights, metrics)
    except StoreError as exc:
        outputs.close()
        metrics.close()
        return fail(str(exc))

    def close_all() -> None:
        metrics.close()
        outputs.close()

    previews = None
    if config.http.port is not None:  # where the readers leave the web view's frames
        from stream.preview import Previews

        previews = Previews()
    try:
        detector = build_detector(
            specs,
            config,
            backend,
            run_id=run_id,
            metrics=metrics,
            on_sent=outputs.on_sent if outputs.sinks or previews is not None else None,
            on_frame=None if truth is None else truth.on_frame,
            previews=previews,
        )
    except KeyFileError as exc:
        close_all()
        return fail(str(exc))
    try:  # before the events socket: whoever hears the first message finds the API up
        info = {"backend": backend.describe(), "model": weights, "run_id": run_id}
        start_api(outputs, config, detector, metrics, previews=previews, specs=specs, info=info)
    except HttpPortError as exc:
        close_all()
        return fail(str(exc))
    try:
        endpoint = detector.publisher.start()
    except PublisherError as exc:
        close_all()
        return fail(str(exc))
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        logger.info("%s: shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        detector.start()
    except StartupError as exc:
        outputs.close()
        return fail(str(exc))
    metrics_url = f"http://{config.metrics.host}:{metrics.port}/metrics" if metrics.port else "off"
    say(
        f"running {len(specs)} stream(s): "
        f"{', '.join(f'{s.stream_id}={s.display}' for s in specs)}; weights: {weights}; "
        f"backend: {backend.describe()}; "
        f"events: {endpoint} (actstream subscribe --zmq {endpoint}); metrics: {metrics_url}; "
        f"store: {outputs.store_path or 'off'}; HTTP API: {outputs.api_url}; "
        f"MQTT: {outputs.mqtt_shown}; Ctrl-C stops"
    )
    if outputs.page_url:
        say(f"web view: {outputs.page_url} (open it in a browser)")
    try:
        detector.run(stop, duration_s=args.duration_s)
    finally:
        detector.close()  # the publisher hands the store and MQTT its last messages first
        outputs.close()
    return 0


def truth_monitor(specs, config, lock: threading.Lock):
    """The `--show-truth` monitor of the synthetic streams (None: there are none); its lines
    go to stderr under the same lock as the printed messages."""
    from engine.cli.outputs import synthetic_scenes
    from engine.truth import TruthMonitor

    scenes = synthetic_scenes(specs, config)
    if not scenes:
        return None

    def write(line: str) -> None:
        with lock:
            sys.stderr.write(line + "\n")
            sys.stderr.flush()

    return TruthMonitor(scenes, write)


def load_backend(config):
    """The model's backend for `actstream run`: an engine directory, or weights (or the
    seeded random initialisation) on the chosen backend. Returns the config with the
    model section of what was loaded."""
    from engine.backbones import build_action_model
    from engine.backends.base import BackendError
    from engine.backends.cache import prepare_backend
    from engine.backends.compile import load_engine
    from engine.checkpoint import load_checkpoint
    from engine.config import BUNDLED, resolve_weights

    weights, why = resolve_weights(config)
    if config.engine.engine_dir:  # the engine holds its model: only explicit weights clash
        weights = None if config.weights == BUNDLED else config.weights
    config = dataclasses.replace(config, weights=weights)
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
        if e.max_batch > manifest.max_batch:  # the engine's profile ends there
            logger.info(
                "engine.max_batch %d capped at the engine's --max-batch %d",
                e.max_batch,
                manifest.max_batch,
            )
            e = dataclasses.replace(e, max_batch=manifest.max_batch)
        return dataclasses.replace(config, model=manifest.model, engine=e), backend
    if config.weights:
        model, model_config, step = load_checkpoint(config.weights, "cpu")
        config = dataclasses.replace(config, model=model_config)
        logger.info(
            "loaded %s (step %d, classes %s)", config.weights, step, ", ".join(model_config.classes)
        )
    else:
        model = build_action_model(config.model)
        if why:
            say(why)
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
