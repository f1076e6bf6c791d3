"""`actstream compile`, `keys` and `proxy`: the commands around the detector (parsers in
engine/cli.py)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from engine.cli import _fail

logger = logging.getLogger("actstream")


def proxy_command(args: argparse.Namespace) -> int:
    from engine.wire.proxy import Proxy, ProxyError

    try:
        proxy = Proxy(args.upstream, args.bind)
    except ProxyError as exc:
        return _fail(str(exc))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(
        f"actstream: proxy {', '.join(args.upstream)} -> {proxy.endpoint} "
        f"(actstream subscribe --zmq {proxy.endpoint}); Ctrl-C stops",
        file=sys.stderr,
        flush=True,
    )
    try:
        proxy.run(stop)
    finally:
        proxy.close()
    logger.info("proxy forwarded %d messages", proxy.forwarded)
    return 0


def keys_command(args: argparse.Namespace) -> int:
    from engine.wire.security import KeyFileError, generate_keypair

    try:
        public, secret = generate_keypair(args.directory, args.name)
    except KeyFileError as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(f"{args.directory}: cannot write keys ({exc.strerror or exc})")
    print(f"{public}  (public key: give it to the other side)")
    print(f"{secret}  (key pair: keep it secret)")
    return 0


def compile_command(args: argparse.Namespace) -> int:
    from engine.backends.base import BackendError
    from engine.backends.choice import choose_backend, default_precision
    from engine.backends.compile import compile_engine, load_engine
    from engine.backends.manifest import EngineError
    from engine.backends.torch_backend import TorchBackend
    from engine.backends.verify import compare_backends
    from engine.checkpoint import CheckpointError, load_checkpoint

    if args.max_batch < 1:
        return _fail(f"--max-batch must be >= 1, got {args.max_batch}")
    device = args.device or ("cuda" if args.backend == "tensorrt" else "cpu")
    try:
        backend = choose_backend(args.backend, device)
        precision = default_precision(backend) if args.precision == "auto" else args.precision
        model, config, step = load_checkpoint(args.checkpoint, "cpu")
        print(
            f"actstream: compiling {args.checkpoint} for {backend} {precision} "
            f"(max batch {args.max_batch}, device {device}) into {args.out}",
            file=sys.stderr,
            flush=True,
        )
        manifest = compile_engine(
            model,
            config,
            args.out,
            backend=backend,
            precision=precision,
            max_batch=args.max_batch,
            device=device,
            standalone_engine=args.standalone_engine,
            step=step,
        )
        if not args.no_verify:
            compiled, _ = load_engine(args.out, device=device)
            reference = TorchBackend(load_checkpoint(args.checkpoint, "cpu")[0], device)
            diffs = compare_backends(reference, compiled, config, batch=min(4, args.max_batch))
            print(
                "actstream: max |compiled - eager| "
                + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()),
                file=sys.stderr,
                flush=True,
            )
    except (CheckpointError, EngineError, BackendError) as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        print(f"actstream: interrupted; nothing written to {args.out}", file=sys.stderr, flush=True)
        return 130
    files = ", ".join(manifest.files)
    print(f"{args.out}: {manifest.backend} {manifest.precision}, {files}, manifest.json")
    return 0
