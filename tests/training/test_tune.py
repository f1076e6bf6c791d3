"""`actstream tune`: the tracker chosen from one recorded replay per video. The replayed tracker
gives exactly the events the real detector publishes with the same config."""

import dataclasses
import json
import subprocess
from pathlib import Path

import yaml

from engine.checkpoint import load_checkpoint
from engine.config import load_config
from engine.tracker import TrackerConfig
from tests.conftest import CMD, scaled
from training.config import DataConfig
from training.data import load_videos
from training.decisions import (
    choose,
    event_f1,
    load_recordings,
    record,
    recording_key,
    save_recordings,
    search,
    simulate,
)
from training.evaluate import replay, reported_actions
from training.synth import write_synthetic_dataset

ROOT = Path(__file__).resolve().parents[2]
BUNDLED = ROOT / "configs" / "weights" / "demo.pt"


def key(a):
    """An action to 0.1 ms and 1e-4 of score: two replays batch the backbone's frames as the
    reader's timing falls, which moves the floats at 1e-6."""
    i = a.interval
    return (
        round(i.start_s, 4),
        round(i.end_s, 4),
        i.label,
        round(i.score, 4),
        round(a.onset_s, 4),
        a.late,
    )


def test_replaying_recorded_head_runs_gives_the_detectors_own_events(tmp_path):
    write_synthetic_dataset(tmp_path, videos=1, seed=41, duration_s=30.0)
    model, model_config, _ = load_checkpoint(BUNDLED)
    app = dataclasses.replace(load_config(None, ["engine.max_batch=1"]), model=model_config)
    (video,), _ = load_videos(
        DataConfig(annotations=str(tmp_path / "annotations.json"), root=str(tmp_path)),
        "all",
        fps=10.0,
        image_size=64,
    )
    path = str(tmp_path / f"{video.video_id}.mp4")
    rec, own = record(model, video, path, app, stop_below=0.05)
    assert len(rec.runs) == 150 and own  # a head run every 2 frames of 30 s
    assert [key(a) for a in simulate(rec, app.tracker)] == [key(a) for a in own]
    saved, made_for = tmp_path / "recordings.json", recording_key(str(BUNDLED), [video], app, 0.05)
    save_recordings(saved, made_for, [rec])
    (loaded,), why = load_recordings(saved, made_for)
    assert loaded == rec and why == ""  # exactly what was recorded
    other_decoding = dataclasses.replace(app, decode=dataclasses.replace(app.decode, nms_sigma=0.9))
    stale, why = load_recordings(saved, recording_key(str(BUNDLED), [video], other_decoding, 0.05))
    assert stale is None and "made for another decode" in why
    every_frame = dataclasses.replace(app, engine=dataclasses.replace(app.engine, head_stride=1))
    stale, why = load_recordings(saved, recording_key(str(BUNDLED), [video], every_frame, 0.05))
    assert stale is None and "made for another head_stride" in why
    other = TrackerConfig(onset_threshold=0.3, keep_threshold=0.3, confirm_runs=1)
    replayed = reported_actions(
        replay(model, path, dataclasses.replace(app, tracker=other)), video.video_id
    )
    assert [key(a) for a in simulate(rec, other)] == [key(a) for a in replayed]
    assert len(replayed) > len(own)  # the immediate tracker reports more (fragments, bursts)


def test_tune_writes_a_tracker_section_the_detector_loads(tmp_path):
    data = tmp_path / "data"
    write_synthetic_dataset(data, videos=2, seed=42, duration_s=20.0)
    out = tmp_path / "tune"
    result = subprocess.run(
        [*CMD, "tune", str(BUNDLED), str(data), "--subset", "all", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=scaled(600),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("recording 2 videos")
    assert "tIoU 0.5: precision" in result.stdout and "chosen tracker" in result.stdout
    config = load_config(out / "tracker.yaml")  # a valid detector config as written
    section = yaml.safe_load((out / "tracker.yaml").read_text())["tracker"]
    assert dataclasses.asdict(config.tracker) == section
    results = json.loads((out / "tune.json").read_text())["results"]
    scores = [r["events"]["by_tiou"]["0.5"]["f1"] for r in results]
    assert len(scores) > 20 and scores[0] >= max(scores) - 0.01  # --f1-tie 0.01 by default
    onset = [r["events"]["onset_delay"]["median_s"] for r in results]
    tied = [d for f, d in zip(scores, onset, strict=True) if f >= max(scores) - 0.01]
    assert onset[0] == min(tied)
    again = subprocess.run(
        [*CMD, "tune", str(BUNDLED), str(data), "--subset", "all", "--out", str(out), "--reuse"],
        capture_output=True,
        text=True,
        timeout=scaled(300),
    )
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("reusing the head runs of 2 videos")
    assert yaml.safe_load((out / "tracker.yaml").read_text())["tracker"] == section
    bad = subprocess.run(
        [*CMD, "tune", str(BUNDLED), str(data), "--subset", "nope"],
        capture_output=True,
        text=True,
        timeout=scaled(120),
    )
    assert bad.returncode == 2 and "no videos in subset 'nope'" in bad.stderr
    assert "Traceback" not in bad.stderr


def _table(f1: float, onset_s: float, per_action: float = 1.0) -> dict:
    return {
        "by_tiou": {"0.5": {"f1": f1}},
        "onset_delay": {"median_s": onset_s},
        "events_per_true_action": per_action,
    }


def test_configs_within_the_f1_tie_are_chosen_by_their_onsets():
    a, b, c, d, e = (TrackerConfig(confirm_runs=n) for n in (1, 2, 3, 4, 5))
    scored = [
        (a, _table(0.850, 0.40)),  # tied with the best, among the earliest onsets
        (b, _table(0.863, 0.80)),  # the best F1
        (c, _table(0.839, 0.30)),  # earliest of all, but outside the tie
        (d, _table(0.856, 0.43)),  # as early as a (within 0.05 s), higher F1: chosen
        (e, _table(0.857, 0.60)),  # tied, later onsets
    ]
    assert [x for x, _ in choose(scored, 0.015)] == [d, a, e, b, c]
    assert [x for x, _ in choose(scored, 0.0)] == [b, e, d, a, c]  # exact F1 only
    assert [x for x, _ in choose(scored, 0.0065)] == [e, b, d, a, c]  # d falls out
    nothing = _table(0.860, float("nan"))  # no match: its onset ranks last among the tied
    assert choose([(a, nothing), (b, _table(0.858, 0.9))], 0.01)[0][0] == b


def test_the_search_goes_on_to_the_earliest_onsets_the_f1_tie_allows():
    """An objective where a clear sighting confirming at once costs F1 after 3 confirming runs
    but not after 2: the F1 search ends at 3 runs and never scores (2 runs, confirm_score
    0.6), the earliest config within the tie; the onset search reaches it."""

    def table_of(c: TrackerConfig) -> dict:
        runs, clear = c.confirm_runs, c.confirm_score == 0.6
        f1 = {1: 0.850, 2: 0.885, 3: 0.890}[runs] - (
            ({2: 0.004, 3: 0.020}.get(runs, 0)) if clear else 0
        )
        onset = 0.3 + 0.05 * runs if clear else 0.1 + 0.2 * runs
        return _table(f1, onset)

    grid = {"confirm_runs": (1, 2, 3), "confirm_score": (None, 0.6)}
    plain = TrackerConfig(confirm_runs=2)
    first = search(table_of, plain, grid, f1_tie=0.0)
    assert first[0][0] == dataclasses.replace(plain, confirm_runs=3)  # the best F1
    assert dataclasses.replace(plain, confirm_score=0.6) not in dict(first)
    chosen, table = search(table_of, plain, grid, f1_tie=0.01)[0]
    assert chosen == dataclasses.replace(plain, confirm_score=0.6)
    assert abs(event_f1(table) - 0.881) < 1e-9
