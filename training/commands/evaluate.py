"""`actstream eval`: offline and streaming evaluation of a checkpoint (a clip checkpoint:
top-1 accuracy on clips)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from engine.cli.common import add_overrides, fail


def add_parser(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser(
        "eval",
        help="offline and streaming evaluation of a checkpoint",
        description="The event table first (every video replayed through the detector: "
        "one-to-one event precision / recall / F1 at tIoU 0.3/0.5/0.7, events per true action, "
        "split actions, false events per minute, retroactive onsets, onset/offset delays, per "
        "class), then offline and streaming mAP at tIoU 0.3-0.7, and for frame-labelling "
        "heads (FAFormer) frame accuracy, edit score and F1@10/25/50; writes results.json and "
        "timelines. A clip checkpoint (task: clips) gets top-1 accuracy on the clips of DATA.",
    )
    add_checkpoint_and_data(ev, "test", "subset to evaluate (default test; all: every video)")
    ev.add_argument("--config", help="detector config for the streaming replay (tracker, decode)")
    add_overrides(ev)
    ev.add_argument("--out", default="runs/eval", help="results folder (default runs/eval)")
    ev.add_argument("--no-streaming", action="store_true", help="offline mAP only")
    ev.add_argument("--timelines", type=int, default=3, help="timeline PNGs to draw (default 3)")
    ev.add_argument(
        "--features", metavar="DIR", help="evaluate on precomputed features (offline only)"
    )
    ev.add_argument(
        "--feature-stride",
        type=int,
        help="frames between two features (default: what the checkpoint was trained with)",
    )
    ev.add_argument(
        "--num-frames",
        type=int,
        help="frames each feature covers (default: what the checkpoint was trained with)",
    )
    ev.set_defaults(handler=eval_command)


def add_checkpoint_and_data(parser: argparse.ArgumentParser, subset: str, subset_help: str):
    """CHECKPOINT, DATA and --subset, as eval and tune take them."""
    parser.add_argument("checkpoint", metavar="CHECKPOINT")
    parser.add_argument(
        "data",
        metavar="DATA",
        help="annotations JSON, or a folder holding annotations.json and the videos",
    )
    parser.add_argument("--subset", default=subset, help=subset_help)


def annotations_path(data: str) -> Path:
    """DATA as given → its annotation JSON (the videos lie beside it)."""
    path = Path(data)
    return path / "annotations.json" if path.is_dir() else path


class InputError(Exception):
    """CHECKPOINT, the config or DATA cannot be used (one line for `fail`)."""


def data_config_for(
    annotations: Path,
    payload: dict,
    *,
    features: str | None = None,
    feature_stride: int = 1,
    num_frames: int = 1,
):
    """What DATA holds for this checkpoint: precomputed features (`features`: their folder),
    signal recordings (a signal model's checkpoint) or videos, beside `annotations`."""
    from training.config import DataConfig

    signals = bool((payload.get("config") or {}).get("input"))
    kind = "features" if features else "signals" if signals else "videos"
    return DataConfig(
        kind=kind,
        annotations=str(annotations),
        root=features or str(annotations.parent),
        file_ext=recording_suffix(annotations) if kind == "signals" else None,
        cache_dir=None,
        feature_stride=feature_stride,
        num_frames=num_frames,
    )


def feature_framing(args: argparse.Namespace, payload: dict) -> tuple[int, int]:
    """(feature stride, frames per feature) for `--features`: the checkpoint's own, which
    an explicit option may only repeat (a warning says when it differs)."""
    if not args.features:
        return 1, 1
    trained = payload.get("trained_on") or {}
    own = (trained.get("feature_stride"), trained.get("num_frames"))
    given = (args.feature_stride, args.num_frames)
    if None in own and None in given:
        raise InputError(
            f"{args.checkpoint}: does not record how its features were framed; give "
            "--feature-stride and --num-frames (the training config's data section)"
        )
    chosen = tuple(g if g is not None else o for g, o in zip(given, own, strict=True))
    if None not in own and chosen != own:
        print(
            f"actstream: warning: the checkpoint was trained on features with stride "
            f"{own[0]} and {own[1]} frames each; evaluating with {chosen[0]} and {chosen[1]}",
            file=sys.stderr,
        )
    if None in chosen or min(chosen) < 1:
        raise InputError("give --feature-stride and --num-frames (both >= 1)")
    return int(chosen[0]), int(chosen[1])


def recording_suffix(annotations: Path) -> str:
    """ ".csv" when the signal recordings beside an annotation file are CSV, else ".npy"."""
    root = annotations.parent
    if any(root.glob("*.csv")) and not any(root.glob("*.npy")):
        return ".csv"
    return ".npy"


def load_inputs(args: argparse.Namespace, data_config, payload: dict | None = None):
    """(model, model config, step, detector config, videos, classes) for CHECKPOINT,
    --config / --set and DATA / --subset; raises `InputError` naming what is wrong."""
    from engine.build import signal_framing
    from engine.checkpoint import CheckpointError, load_checkpoint
    from engine.config import load_config
    from engine.loader import ConfigError
    from training.annotations import AnnotationError
    from training.data import load_videos

    try:
        model, model_config, step = load_checkpoint(args.checkpoint, payload=payload)
        app = dataclasses.replace(load_config(args.config, args.overrides), model=model_config)
        videos, classes = load_videos(
            data_config,
            args.subset,
            fps=model_config.fps,
            image_size=model_config.backbone.image_size,
            classes=model_config.classes,
            framing=signal_framing(model_config),
            feature_dim=model_config.feature_dim,
        )
    except (CheckpointError, ConfigError, AnnotationError, ValueError) as exc:
        raise InputError(str(exc)) from None
    except FileNotFoundError as exc:
        raise InputError(f"{exc.filename}: no such file") from None
    return model, model_config, step, app, videos, classes


def clip_eval_command(args: argparse.Namespace, payload: dict) -> int:
    from engine.checkpoint import CheckpointError
    from training.annotations import AnnotationError
    from training.clips import evaluate_clips

    try:
        report = evaluate_clips(args.checkpoint, args.data, args.subset, Path(args.out), payload)
    except (CheckpointError, AnnotationError, ValueError) as exc:
        return fail(str(exc))
    except FileNotFoundError as exc:
        return fail(f"{exc.filename}: no such file")
    per_class = "  ".join(f"{c}: {a:.2f}" for c, a in report["per_class_top1"].items())
    print(f"clip top-1 accuracy: {report['top1']:.3f} on {report['clips']} clips")
    print(f"per class: {per_class}")
    print(f"results: {Path(args.out) / 'results.json'}")
    return 0


def eval_command(args: argparse.Namespace) -> int:
    from engine.checkpoint import CheckpointError, read_payload

    try:
        payload = read_payload(args.checkpoint)
    except CheckpointError as exc:
        return fail(str(exc))
    if payload.get("task") == "clips":
        return clip_eval_command(args, payload)
    from engine.backends.base import BackendError
    from engine.backends.manifest import EngineError
    from models.heads import head_family
    from training.evaluate import (
        evaluate_offline,
        evaluate_streaming,
        ground_truth,
        head_latency_ms,
        offline_detections,
        offline_segmentation,
    )
    from training.event_metrics import event_table
    from training.plots import plot_timeline
    from training.progress import Progress
    from training.seg_metrics import segmentation_scores

    ann = annotations_path(args.data)
    try:
        stride, frames = feature_framing(args, payload)
    except InputError as exc:
        return fail(str(exc))
    data_config = data_config_for(
        ann, payload, features=args.features, feature_stride=stride, num_frames=frames
    )
    root, signals = data_config.root, data_config.kind == "signals"
    try:
        model, model_config, step, app, videos, classes = load_inputs(args, data_config, payload)
    except InputError as exc:
        return fail(str(exc))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seen = set((payload.get("trained_on") or {}).get("videos", ())) & {v.video_id for v in videos}
    if seen:
        print(
            f"actstream: warning: {len(seen)} of the {len(videos)} evaluated videos are in the "
            f"checkpoint's training set (e.g. {min(seen)}): these numbers are not held out; "
            "evaluate on videos of other seeds or subsets",
            file=sys.stderr,
        )
    from_features = bool(args.features)
    offline = evaluate_offline(model, videos, classes, app.decode, from_features=from_features)
    results: dict = {
        "checkpoint": args.checkpoint,
        "step": step,
        "subset": args.subset,
        "videos": len(videos),
        "videos_seen_in_training": len(seen),
        "offline_map": offline.map_by_tiou,
        "offline_average_map": offline.average_map,
    }
    lines = [_map_line("offline", offline)]
    results["head"] = model_config.head.type
    results["head_ms_per_window"] = head_latency_ms(model)
    lines.append(
        f"head per window: {results['head_ms_per_window']:.2f} ms (torch, 1 window, 1 thread)"
    )
    if head_family(model_config.head).frame_probs is not None:  # a frame-labelling head
        results["offline_segmentation"] = offline_segmentation(
            model, videos, classes, app.decode, from_features
        )
        lines.append(_seg_line("offline", results["offline_segmentation"]))
    streaming = None
    if from_features and not args.no_streaming:
        print(
            "actstream: streaming evaluation replays videos or recordings through the "
            "detector; skipped for --features (offline scores only)",
            file=sys.stderr,
        )
    if not args.no_streaming and not from_features:
        paths = {
            v.video_id: str(Path(root) / f"{v.video_id}{data_config.file_ext}") for v in videos
        }
        what = "recordings" if signals else "videos"
        bar = Progress(len(videos), every=1, label=what)
        print(f"replaying {len(videos)} {what} through the detector ...", file=sys.stderr)
        try:
            streaming = evaluate_streaming(
                model, videos, paths, classes, app, progress=lambda i, n: bar.update(i)
            )
        except (EngineError, BackendError) as exc:  # engine.engine_dir that does not fit
            return fail(str(exc))
        ratio = streaming.map_result.average_map / max(offline.average_map, 1e-9)
        results.update(
            events=streaming.events,
            streaming_map=streaming.map_result.map_by_tiou,
            streaming_average_map=streaming.map_result.average_map,
            streaming_over_offline=ratio,
        )
        lines = [
            *event_table(streaming.events),
            *lines,
            _map_line("streaming", streaming.map_result),
            f"streaming / offline mAP: {ratio:.3f}",
        ]
        results["streaming_segmentation"] = segmentation_scores(
            streaming.segments,
            {v.video_id: ground_truth([v], classes) for v in videos},
            classes,
            {v.video_id: len(v.data) for v in videos},
            videos[0].step_s,
        )
        lines.append(_seg_line("streaming", results["streaming_segmentation"]))
    for v in videos[: args.timelines]:
        dets = offline_detections(
            model, v, classes, app.decode, from_features=from_features, device="cpu"
        )
        plot_timeline(
            out / f"timeline_{v.video_id}.png",
            title=v.video_id,
            classes=classes,
            duration_s=v.annotation.duration_s,
            ground_truth=[
                (s, e, lab)
                for (s, e), lab in zip(v.annotation.segments, v.annotation.labels, strict=True)
            ],
            offline=[(d.start_s, d.end_s, d.label, d.score) for d in dets if d.score >= 0.3],
            streaming=[
                (d.start_s, d.end_s, d.label, d.score)
                for d in (streaming.segments[v.video_id] if streaming else [])
            ],
            onsets=streaming.onsets[v.video_id] if streaming else [],
        )
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print("\n".join(lines))
    print(f"results: {out / 'results.json'}")
    return 0


def _seg_line(name: str, scores: dict) -> str:
    parts = "  ".join(f"{k} {v:.1f}" for k, v in scores.items())
    return f"{name} segmentation: {parts}"


def _map_line(name: str, result) -> str:
    parts = "  ".join(f"{t:.1f}: {m:.3f}" for t, m in result.map_by_tiou.items())
    return f"{name} mAP  {parts}  avg: {result.average_map:.3f}"
