"""`actstream compile`: a checkpoint into an engine directory, checked against eager."""

from __future__ import annotations

import argparse

from engine.backends.names import BACKENDS, PRECISIONS
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
        choices=["auto", *BACKENDS],
        help="target backend (default auto: the best that runs on --device here)",
    )
    comp.add_argument(
        "--precision",
        default="auto",
        choices=["auto", *PRECISIONS],
        help="fp32; fp16 (needs CUDA; the model is cast to half before compiling); bf16 (CPU "
        "with AVX512-BF16 or AMX: torch, openvino); int8 (CPU with VNNI or AMX: the backbone "
        "quantised, onnxruntime, openvino); auto (default: on a GPU fp16 for tensorrt; on the "
        "CPU with --backend auto, every backend x precision measured here, the fastest within "
        "its accuracy bound kept)",
    )
    comp.add_argument(
        "--calibration",
        metavar="VIDEOS",
        help="int8: a video file or folder of videos to calibrate on (default: the "
        "checkpoint's training videos, where they are on disk)",
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
    from engine.backends.compile import compile_engine
    from engine.backends.manifest import EngineError
    from engine.backends.measure import compile_auto
    from engine.calibration import calibration_frames, calibration_videos
    from engine.checkpoint import CheckpointError, load_checkpoint, read_payload

    if args.max_batch < 1:
        return fail(f"--max-batch must be >= 1, got {args.max_batch}")
    device = args.device or ("cuda" if args.backend == "tensorrt" else "cpu")
    measured = args.backend == "auto" and args.precision == "auto" and device == "cpu"
    try:
        payload = read_payload(args.checkpoint, "cpu")
        model, config, step = load_checkpoint(args.checkpoint, "cpu", payload)
        calibration = None
        if args.precision == "int8" or (measured and config.input is None):
            try:
                videos = calibration_videos(args.calibration, payload.get("trained_on"))
                calibration = calibration_frames(config, videos)
            except BackendError as exc:
                if not measured:
                    raise
                say(f"int8 not measured: {exc}")
        if measured:
            say(
                f"compiling {args.checkpoint} for every CPU backend and precision that runs "
                f"here, measuring each (max batch {args.max_batch}) into {args.out}"
            )
            manifest = compile_auto(
                model,
                config,
                args.out,
                max_batch=args.max_batch,
                calibration=calibration,
                step=step,
                say=say,
            )
            say(f"chose {manifest.notes['auto']['chosen']}: {manifest.notes['auto']['why']}")
        else:
            backend = choose_backend(args.backend, device)
            precision = default_precision(backend) if args.precision == "auto" else args.precision
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
                calibration=calibration,
                verify=not args.no_verify,
            )
        for key, what in (("max_abs_difference", "|compiled - eager|"),
                          ("max_relative_error", "relative")):  # fmt: skip
            if key in manifest.notes:
                values = manifest.notes[key].items()
                say(f"max {what} " + ", ".join(f"{k} {v:.2e}" for k, v in values))
    except (CheckpointError, EngineError, BackendError, BackboneError) as exc:
        return fail(str(exc))
    except KeyboardInterrupt:
        say(f"interrupted; nothing written to {args.out}")
        return EXIT_INTERRUPTED
    files = ", ".join(manifest.files)
    print(f"{args.out}: {manifest.backend} {manifest.precision}, {files}, manifest.json")
    return 0
