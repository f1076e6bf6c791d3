"""`actstream compile`: a checkpoint into an engine directory, checked against eager."""

from __future__ import annotations

import argparse

from engine.cli.common import EXIT_INTERRUPTED, fail, say


def add_parser(sub: argparse._SubParsersAction) -> None:
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
    comp.set_defaults(handler=compile_command)


def compile_command(args: argparse.Namespace) -> int:
    from engine.backbones import BackboneError
    from engine.backends.base import BackendError
    from engine.backends.choice import choose_backend, default_precision
    from engine.backends.compile import compile_engine, load_engine
    from engine.backends.manifest import EngineError
    from engine.backends.torch_backend import TorchBackend
    from engine.backends.verify import compare_backends
    from engine.checkpoint import CheckpointError, load_checkpoint

    if args.max_batch < 1:
        return fail(f"--max-batch must be >= 1, got {args.max_batch}")
    device = args.device or ("cuda" if args.backend == "tensorrt" else "cpu")
    try:
        backend = choose_backend(args.backend, device)
        precision = default_precision(backend) if args.precision == "auto" else args.precision
        model, config, step = load_checkpoint(args.checkpoint, "cpu")
        say(
            f"compiling {args.checkpoint} for {backend} {precision} "
            f"(max batch {args.max_batch}, device {device}) into {args.out}"
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
            say("max |compiled - eager| " + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()))
    except (CheckpointError, EngineError, BackendError, BackboneError) as exc:
        return fail(str(exc))
    except KeyboardInterrupt:
        say(f"interrupted; nothing written to {args.out}")
        return EXIT_INTERRUPTED
    files = ", ".join(manifest.files)
    print(f"{args.out}: {manifest.backend} {manifest.precision}, {files}, manifest.json")
    return 0
