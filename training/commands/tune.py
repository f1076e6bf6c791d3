"""`actstream tune`: the decision layer (tracker section) chosen on validation videos by event
F1, from one recorded replay per video."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from engine.cli.common import add_overrides, fail
from training.commands.evaluate import (
    InputError,
    add_checkpoint_and_data,
    annotations_path,
    data_config_for,
    load_inputs,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    tune = sub.add_parser(
        "tune",
        help="choose the tracker's parameters on validation videos by event F1",
        description="Replays every video of the subset once through the detector, recording "
        "its head runs, then scores every tracker config of a grid on the recording (the "
        "tracker is pure: same events as a replay with that config) by event F1 at tIoU 0.5 "
        "(ties: fewer events per true action, then earlier onsets), one parameter at a time "
        "until a pass over the grid changes nothing; then a second such search moves towards "
        "earlier onsets while F1 stays within --f1-tie of the best, and of the configs "
        "within the tie, the best of those with the earliest onsets is chosen. Prints the "
        "chosen config's event table and writes OUT/tracker.yaml (a tracker section to "
        "paste into a detector config), OUT/tune.json (every config with its table) and "
        "OUT/recordings.json (the head runs, for --reuse).",
    )
    add_checkpoint_and_data(
        tune,
        "validation",
        "subset to tune on (default validation; all: every video); never the test videos",
    )
    tune.add_argument("--config", help="detector config whose other sections the replay uses")
    add_overrides(tune, "decode.nms_sigma=0.5")
    tune.add_argument("--out", default="runs/tune", help="results folder (default runs/tune)")
    tune.add_argument(
        "--f1-tie",
        type=float,
        default=0.01,
        metavar="D",
        help="configs whose F1 is within D of the best are tied; of those whose median "
        "onset is within 0.05 s of the earliest tied one, the best F1 is chosen (default "
        "0.01, about one standard error of F1 on ~900 true actions; 0: the best F1 whatever "
        "its onsets)",
    )
    tune.add_argument(
        "--reuse",
        action="store_true",
        help="search again on OUT/recordings.json when it was recorded for this checkpoint, "
        "these videos and this decoding (every replay writes it); otherwise record anew",
    )
    tune.set_defaults(handler=tune_command)


def tune_command(args: argparse.Namespace) -> int:
    from engine.checkpoint import CheckpointError, read_payload
    from training.decisions import (
        GRID,
        config_changes,
        event_f1,
        load_recordings,
        record,
        recording_key,
        save_recordings,
        simulate,
        tune,
    )
    from training.evaluate import streaming_result
    from training.event_metrics import event_table
    from training.progress import Progress

    if not 0 <= args.f1_tie < 1:
        return fail(f"tune: --f1-tie must be in [0, 1), not {args.f1_tie}")
    ann = annotations_path(args.data)
    try:
        payload = read_payload(args.checkpoint)
        data_config = data_config_for(ann, payload)
        model, _, _, app, videos, classes = load_inputs(args, data_config, payload)
    except CheckpointError as exc:
        return fail(str(exc))
    except InputError as exc:
        return fail(str(exc))
    lowest = min(GRID["onset_threshold"]) * min(GRID["keep_ratio"])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    saved = out / "recordings.json"
    key = recording_key(args.checkpoint, videos, app, lowest)
    recordings, why = load_recordings(saved, key) if args.reuse else (None, "")
    if recordings is not None:
        print(f"reusing the head runs of {len(videos)} videos in {saved}", flush=True)
    else:
        if why:
            print(f"recording anew: {why}", flush=True)
        print(f"recording {len(videos)} videos of {args.subset!r} ...", flush=True)
        bar = Progress(len(videos), every=1, label="videos")
        recordings = []
        for i, v in enumerate(videos, 1):
            path = str(ann.parent / f"{v.video_id}{data_config.file_ext}")
            rec, _ = record(model, v, path, app, stop_below=lowest)
            recordings.append(rec)
            bar.update(i)
        save_recordings(saved, key, recordings)
    print("searching the tracker grid (coordinate search, a line per config) ...", flush=True)
    scored = tune(
        recordings,
        videos,
        classes,
        app.tracker,
        f1_tie=args.f1_tie,
        progress=lambda n: print(f"  {n} configs scored", file=sys.stderr, flush=True),
    )
    best = scored[0][0]
    actions = {r.video_id: simulate(r, best) for r in recordings}
    table = streaming_result(actions, videos, classes).events  # with the mAPs
    chosen = {f.name: getattr(best, f.name) for f in dataclasses.fields(best)}
    yaml_lines = [
        f"# chosen by actstream tune on {len(videos)} videos of {args.subset!r} "
        f"({ann}); event F1@0.5 {table['by_tiou']['0.5']['f1']:.3f}",
        "tracker:",
        *(f"  {k}: {'null' if v is None else v}" for k, v in chosen.items()),
    ]
    (out / "tracker.yaml").write_text("\n".join(yaml_lines) + "\n")
    (out / "tune.json").write_text(
        json.dumps(
            {
                "checkpoint": args.checkpoint,
                "data": str(ann),
                "subset": args.subset,
                "videos": len(videos),
                "grid": GRID,
                "f1_tie": args.f1_tie,
                "results": [
                    {"tracker": config_changes(c, app.tracker), "events": t} for c, t in scored
                ],
            },
            indent=1,
            default=str,
        )
    )
    print("\n".join(event_table(table)))
    top = max(scored, key=lambda ct: event_f1(ct[1]))
    if top[0] != best:
        print(
            f"best F1 {event_f1(top[1]):.3f} with",
            config_changes(top[0], app.tracker),
            f"(onsets median {top[1]['onset_delay']['median_s']:.2f} s); chosen: the earliest "
            f"onsets (within 0.05 s) among the configs within --f1-tie {args.f1_tie:g} of it",
        )
    print("chosen tracker (changes from the given config):", config_changes(best, app.tracker))
    for c, t in scored[1:4]:
        print(f"  next: F1 {event_f1(t):.3f}", config_changes(c, app.tracker))
    print(f"tracker section: {out / 'tracker.yaml'}   all configs: {out / 'tune.json'}")
    return 0
