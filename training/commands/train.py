"""`actstream train`: a model from a training config (detection, or FastBack clips)."""

from __future__ import annotations

import argparse

from engine.cli.common import EXIT_INTERRUPTED, add_overrides, fail, say


def add_parser(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser(
        "train",
        help="train a model from a training config",
        description="Train; writes OUT_DIR/last.pt, curves.png, config.json. A config with "
        "task: clips trains FastBack clip recognition (configs/train_clips.yaml).",
    )
    train.add_argument(
        "config", metavar="CONFIG", help="training YAML, e.g. configs/train_synthetic.yaml"
    )
    add_overrides(train, "optim.steps=500")
    train.add_argument("--resume", action="store_true", help="continue from OUT_DIR/train_state.pt")
    train.add_argument("--init", metavar="CHECKPOINT", help="start from these weights")
    train.set_defaults(handler=train_command)


def train_command(args: argparse.Namespace) -> int:
    from engine.backbones import BackboneError
    from engine.checkpoint import CheckpointError
    from engine.loader import ConfigError, read_yaml_mapping
    from training.annotations import AnnotationError
    from training.config import load_train_config
    from training.detection import train
    from training.loop import TrainingInterrupted

    try:
        if _task_of(args.config) == "clips":
            from training.clips import load_clip_config, train_clips

            if args.init:
                return fail("train: --init is for detection configs")
            config = load_clip_config(read_yaml_mapping(args.config), args.overrides)
            path = train_clips(config, resume=args.resume)
        else:
            config = load_train_config(args.config, args.overrides)
            path = train(config, resume=args.resume, init_from=args.init)
    except TrainingInterrupted as exc:
        say(f"train: {exc}: actstream train {args.config} --resume")
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:  # before the first step: nothing to save
        say("train: interrupted before the first step")
        return EXIT_INTERRUPTED
    except (ConfigError, AnnotationError, CheckpointError, BackboneError) as exc:
        return fail(str(exc))
    except FileNotFoundError as exc:
        return fail(f"{exc.filename}: no such file (run actstream synth first?)")
    print(f"checkpoint: {path}")
    return 0


def _task_of(path: str) -> str:
    from engine.loader import ConfigError, read_yaml_mapping

    try:
        return str(read_yaml_mapping(path).get("task", "detection"))
    except ConfigError:  # the detection loader reports the problem with its own message
        return "detection"
