"""Choosing the decision layer on validation data: each video is replayed once through the
real detector while its head runs are recorded (window bounds and segments); the tracker is
pure, so any `TrackerConfig` is then replayed over the recorded runs in milliseconds, and a
grid of them is searched for the best event F1 at tIoU 0.5 (`training.event_metrics`).

The replay gives the same events as the detector with that config (tested): the head runs on
the same windows whatever the tracker does, and segments are decoded down to the lowest
threshold on the grid (decoding is unchanged above it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from engine.config import AppConfig
from engine.segmenter import ModelSegmenter, Window
from engine.tracker import Tracker, TrackerConfig, TrackEvent
from models.action_model import ActionModel
from models.intervals import Interval
from training.data import VideoItem
from training.evaluate import ReportedAction, replay, reported_actions, streaming_events

logger = logging.getLogger(__name__)

# The grid `actstream tune` searches (every value is a TrackerConfig field).
GRID: dict[str, tuple] = {
    "onset_threshold": (0.3, 0.4, 0.5, 0.6, 0.7),
    "keep_ratio": (1.0, 0.75, 0.5, 0.35),  # keep_threshold = onset_threshold * keep_ratio
    "confirm_runs": (1, 2, 3, 4),
    "confirm_score": (None, 0.9, 0.8, 0.7, 0.6),
    "offset_confirm_runs": (1, 2, 3, 4),
    "cross_class_iou": (1.0, 0.7, 0.5),
    "close_after_missed_runs": (2, 3, 4),
    "match_iou": (0.2, 0.3, 0.4),
    "open_tolerance_frames": (1.0, 2.0, 3.0),
    "late_policy": ("mark", "drop"),
}
JOINT = ("onset_threshold", "keep_ratio", "confirm_runs")  # searched as a product first


@dataclass(frozen=True, slots=True)
class HeadRun:
    window_start_s: float
    window_end_s: float
    detections: list[Interval]


class RecordingSegmenter:
    """A `ModelSegmenter` that keeps every head run it makes (one stream, in order)."""

    def __init__(self, inner: ModelSegmenter) -> None:
        self.inner, self.runs = inner, []

    def __call__(self, window: Window) -> list[Interval]:
        return self.many([window])[0]

    def many(self, windows: list[Window]) -> list[list[Interval]]:
        found = self.inner.many(windows)
        self.runs += [HeadRun(w.start_s, w.end_s, d) for w, d in zip(windows, found, strict=True)]
        return found


@dataclass(frozen=True)
class Recording:
    """One video's head runs; `decision_lag_s`: decision frame time − window end (the frame
    period, minus the encoder's lookahead)."""

    video_id: str
    runs: list[HeadRun]
    decision_lag_s: float
    frame_period_s: float


def record(
    model: ActionModel, video: VideoItem, path: str, config: AppConfig, stop_below: float
) -> tuple[Recording, list[ReportedAction]]:
    """Replays one video through the real detector, recording its head runs; also returns the
    actions the detector itself reported (with `config.tracker`)."""
    from engine.backends.torch_backend import TorchBackend

    segmenter = RecordingSegmenter(
        ModelSegmenter(
            TorchBackend(model, config.engine.device),
            config.model.classes,
            config.decode,
            stop_below=stop_below,
        )
    )
    events = replay(model, path, config, segmenter=segmenter)
    period = 1.0 / config.model.fps
    lag = (model.temporal.config.delay_frames - 1) * period
    return Recording(video.video_id, segmenter.runs, lag, period), reported_actions(
        events, video.video_id
    )


RECORDINGS_FORMAT = 1


def recording_key(checkpoint: str, videos: list[VideoItem], config: AppConfig, stop_below: float):
    """What a set of recordings depends on: the checkpoint's bytes, the videos, the decoding,
    how often the head runs and the lowest score kept (the tracker is what gets searched, so
    it is not part of it)."""
    digest = hashlib.sha256(Path(checkpoint).read_bytes()).hexdigest()
    return {
        "format": RECORDINGS_FORMAT,
        "checkpoint_sha256": digest,
        "videos": [v.video_id for v in videos],
        "decode": dataclasses.asdict(config.decode),
        "head_stride": config.engine.head_stride,
        "stop_below": stop_below,
    }


def save_recordings(path: Path, key: dict, recordings: list[Recording]) -> None:
    """Writes `recordings` with `key` as JSON (atomically)."""
    body = {
        "key": key,
        "recordings": [
            {
                "video_id": r.video_id,
                "decision_lag_s": r.decision_lag_s,
                "frame_period_s": r.frame_period_s,
                "runs": [
                    [run.window_start_s, run.window_end_s, [_plain(d) for d in run.detections]]
                    for run in r.runs
                ],
            }
            for r in recordings
        ],
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(body, separators=(",", ":")))
    tmp.replace(path)


def load_recordings(path: Path, key: dict) -> tuple[list[Recording] | None, str]:
    """The recordings saved at `path` if they were made for `key`; else (None, why not)."""
    try:
        body = json.loads(path.read_text())
    except FileNotFoundError:
        return None, f"{path}: none saved yet"
    except (OSError, ValueError) as exc:
        return None, f"{path}: unreadable ({exc})"
    if body.get("key") != key:
        old = body.get("key") or {}
        what = [k for k in key if old.get(k) != key[k]]
        return None, f"{path}: made for another {' and '.join(what) or 'format'}"
    return [
        Recording(
            r["video_id"],
            [HeadRun(s, e, [Interval(*d) for d in dets]) for s, e, dets in r["runs"]],
            r["decision_lag_s"],
            r["frame_period_s"],
        )
        for r in body["recordings"]
    ], ""


def _plain(d: Interval) -> list:
    return [d.start_s, d.end_s, d.label, d.score]


def simulate(rec: Recording, config: TrackerConfig) -> list[ReportedAction]:
    """The actions a detector with tracker `config` reports on the recorded video."""
    tracker = Tracker(config, frame_period_s=rec.frame_period_s, id_prefix="sim-")
    events: list[tuple[TrackEvent, float]] = []
    for run in rec.runs:
        found = tracker.update(
            run.detections, window_start_s=run.window_start_s, window_end_s=run.window_end_s
        )
        events += [(e, run.window_end_s + rec.decision_lag_s) for e in found]
    if rec.runs:
        end = rec.runs[-1].window_end_s
        closed = tracker.close_all("stream_ended", at_s=end)  # decided on the last frame
        events += [(e, end - rec.frame_period_s) for e in closed]
    return reported_actions([_Timed(e, t) for e, t in events], rec.video_id)


@dataclass(frozen=True, slots=True)
class _Timed:
    """A TrackEvent with the stream time it was decided at (as an ActionEvent has)."""

    event: TrackEvent
    frame_s: float

    def __getattr__(self, name: str):
        return getattr(self.event, name)


def with_value(config: TrackerConfig, name: str, value) -> TrackerConfig:
    """`config` with one grid value set (`keep_ratio` sets keep_threshold from the onset
    threshold, which keeps its ratio when the onset threshold moves)."""
    ratio = config.keep_threshold / config.onset_threshold if config.onset_threshold else 1.0
    if name == "keep_ratio":
        ratio, name, value = value, "onset_threshold", config.onset_threshold
    changes = {name: value}
    changes["keep_threshold"] = round(
        changes.get("onset_threshold", config.onset_threshold) * ratio, 4
    )
    return dataclasses.replace(config, **changes)


def tune(
    recordings: list[Recording],
    videos: list[VideoItem],
    classes: tuple[str, ...],
    base: TrackerConfig,
    grid: dict[str, tuple] = GRID,
    *,
    passes: int = 3,
    f1_tie: float = 0.0,
    progress=None,
) -> list[tuple[TrackerConfig, dict]]:
    """`search` with each config's event table from replaying it over `recordings`."""
    done = [0]

    def table(config: TrackerConfig) -> dict:
        actions = {r.video_id: simulate(r, config) for r in recordings}
        done[0] += 1
        if progress is not None:
            progress(done[0])
        return streaming_events(actions, videos, classes, with_map=False)

    return search(table, base, grid, passes=passes, f1_tie=f1_tie)


def search(
    table_of,
    base: TrackerConfig,
    grid: dict[str, tuple] = GRID,
    *,
    passes: int = 3,
    f1_tie: float = 0.0,
) -> list[tuple[TrackerConfig, dict]]:
    """The search: every combination of the `JOINT` parameters (they trade off against each
    other), then from the best a coordinate search: each parameter in turn takes the grid
    value that scores best with the others held, until a pass changes nothing (at most
    `passes`). Score: event F1 at tIoU 0.5, then fewer events per true action, then the
    smaller median onset delay. With `f1_tie` > 0 a second coordinate search goes from the
    choice towards earlier onsets: each parameter takes the value with the earliest median
    onset among those whose F1 stays within `f1_tie` of the best (the first search only
    looks near the best F1, and may never score the early configs tied with it).
    `table_of(config)`: its event table. Returns every config tried with its event table,
    best first; the first is the choice (`choose`)."""
    tables: dict[TrackerConfig, dict] = {}

    def table(config: TrackerConfig) -> dict:
        if config not in tables:
            tables[config] = table_of(config)
        return tables[config]

    def score(config: TrackerConfig) -> tuple:
        return _rank(table(config))

    joint = [k for k in JOINT if k in grid]
    starts = [base]
    for name in joint:
        starts = [with_value(c, name, v) for c in starts for v in grid[name]]
    best = _descend(min(starts, key=score), score, grid, passes)
    if f1_tie > 0:
        floor = event_f1(table(best)) - f1_tie - 1e-9

        def early(config: TrackerConfig) -> tuple:
            t = table(config)
            return (event_f1(t) < floor, _delay(t), _rank(t))

        _descend(choose(list(tables.items()), f1_tie)[0][0], early, grid, passes)
    return choose(list(tables.items()), f1_tie)


def _descend(config: TrackerConfig, key, grid: dict[str, tuple], passes: int) -> TrackerConfig:
    """Coordinate search from `config`: each parameter in turn takes the grid value with the
    smallest `key`, the others held, until a pass changes nothing (at most `passes`)."""
    for _ in range(passes):
        before = config
        for name, values in grid.items():
            config = min((with_value(config, name, v) for v in values), key=key)
        if config == before:
            break
    return config


ONSET_TIE_S = 0.05  # median onsets closer than this are the same (head runs are 0.2 s apart)


def choose(scored: list[tuple[TrackerConfig, dict]], f1_tie: float = 0.0) -> list:
    """`scored` ordered best first: by `_rank`, except that every config whose F1 is within
    `f1_tie` of the best one's counts as tied with it, and the tied configs come first: those
    whose median onset is within `ONSET_TIE_S` of the earliest, by `_rank`, then the other
    tied ones by onset. An F1 difference smaller than the measurement's own spread (about one
    standard error, sqrt(F1 (1 - F1) / true actions): 0.011 at F1 0.86 on 900 actions) says
    nothing, while every onset is a delay a subscriber waits."""
    ranked = sorted(scored, key=lambda ct: _rank(ct[1]))
    if not ranked or f1_tie <= 0:
        return ranked
    floor = event_f1(ranked[0][1]) - f1_tie - 1e-9
    tied = [ct for ct in ranked if event_f1(ct[1]) >= floor]  # still in `_rank` order
    soon = min(_delay(t) for _, t in tied) + ONSET_TIE_S
    later = sorted((ct for ct in tied if _delay(ct[1]) > soon), key=lambda ct: _delay(ct[1]))
    early = [ct for ct in tied if _delay(ct[1]) <= soon]
    return early + later + [ct for ct in ranked if event_f1(ct[1]) < floor]


def event_f1(table: dict) -> float:
    """Event F1 at tIoU 0.5 of an event table: what the search maximises."""
    return table["by_tiou"]["0.5"]["f1"]


def _delay(table: dict) -> float:
    delay = table["onset_delay"]["median_s"]
    return delay if delay == delay else 1e9  # NaN (nothing matched) last


def _rank(table: dict) -> tuple:
    return (-event_f1(table), table["events_per_true_action"], _delay(table))


def config_changes(config: TrackerConfig, base: TrackerConfig | None = None) -> dict:
    """The fields of `config` that differ from `base` (default: TrackerConfig's defaults)."""
    base = base or TrackerConfig()
    return {
        f.name: getattr(config, f.name)
        for f in dataclasses.fields(config)
        if getattr(config, f.name) != getattr(base, f.name)
    }
