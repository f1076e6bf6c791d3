"""The decision layer: segments seen in overlapping windows → one onset and one offset per
action, published as early as the evidence allows and never taken back.

Pure logic, per stream, in stream time; no clocks. Each head run gives the segments of the
window that ends at `window_end_s`. A segment that reaches the window's end (within a
tolerance) is *open*: the action is still going on. Segments are matched to tracked actions
of the same label by tIoU of what the window can see of both, so the same action seen by
many overlapping windows stays one action.

A tracked action is *pending* (not yet published), *open* (onset published) or *closed*
(offset published, kept while a window can still see it so that it is not found again):
* one motion, one label: within a run, a segment overlapping a stronger one of another label
  by `cross_class_iou` or more is dropped, and a new segment overlapping a pending or open
  action of another label that much opens nothing;
* a segment scoring `onset_threshold` or more that matches nothing starts a pending action;
  it is published (`onset`) once `confirm_runs` runs in a row have seen it that strong, or at
  once when a sighting scores `confirm_score` or more (a clear action needs no wait); one
  missed `close_after_missed_runs` times is dropped, and absorbs its later sightings while a
  window can see it (measured on validation: forgetting it instead, so that it may start
  again, gave event F1 0.832 against 0.833);
* an action found late — its start more than `late_after_s` before the window's end when it
  is confirmed, or cut by the window's left edge — is published with `late: true` (or
  dropped, `late_policy: drop`), never as a fresh onset;
* a published action stays open while segments of at least `keep_threshold` match it; it
  ends (`offset`, reason "ended") once `offset_confirm_runs` runs in a row saw its segment
  end before the window's end, or ("score_dropped") after `close_after_missed_runs` runs in
  a row without a match, ending where it was last seen;
* a short action confirmed after it ended gets its onset and offset together;
* `close_all` ends every open action (stream ended, disconnected, shutdown).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from engine.loader import check_positive, check_unit
from models.intervals import Interval, interval_iou


@dataclass(frozen=True, kw_only=True)
class TrackerConfig:
    """Segments → one onset and one offset per action. The defaults were chosen by
    `actstream tune` for the bundled model on 50 validation videos (`actstream synth --seed
    11 --split validation`) by event F1 at tIoU 0.5 (README, "Choosing the decision layer").

    Attributes:
        onset_threshold: a segment needs this score to start (or confirm) an action.
        keep_threshold: a published action is kept open by segments of at least this score
            (hysteresis; at most onset_threshold).
        confirm_runs: runs in a row that must see a new action before its onset.
        confirm_score: a sighting scoring this much confirms a new action at once, whatever
            confirm_runs says (None: never; every onset waits for confirm_runs; at or below
            onset_threshold: every onset is published on its first sighting).
        offset_confirm_runs: runs in a row that must see an open action ended before its
            offset.
        match_iou: a segment with at least this tIoU with a tracked action of the same label
            is that action seen again.
        cross_class_iou: a segment overlapping a stronger segment or a tracked action of
            another label this much is the same motion (1 = no cross-class suppression).
        open_tolerance_frames: a segment ending within this many frames of the window's end
            is still open (the action goes on).
        close_after_missed_runs: an open action not seen in this many head runs in a row is
            closed (its score fell away).
        late_after_s: an action confirmed more than this after its own start is a late find.
        late_policy: "mark" publishes late finds with `late: true`; "drop" never publishes
            them.
    """

    onset_threshold: float = 0.5
    keep_threshold: float = 0.25
    confirm_runs: int = 2
    confirm_score: float | None = None
    offset_confirm_runs: int = 2
    match_iou: float = 0.3
    cross_class_iou: float = 1.0
    open_tolerance_frames: float = 3.0
    close_after_missed_runs: int = 2
    late_after_s: float = 3.0
    late_policy: Literal["mark", "drop"] = "mark"

    def __post_init__(self) -> None:
        check_unit(self, "onset_threshold", "keep_threshold", "match_iou", "cross_class_iou")
        if self.confirm_score is not None and not 0 <= self.confirm_score <= 1:
            raise ValueError(f"confirm_score must be in [0, 1] or null, not {self.confirm_score}")
        check_positive(
            self, "close_after_missed_runs", "confirm_runs", "offset_confirm_runs", "late_after_s"
        )
        if self.open_tolerance_frames < 0:
            raise ValueError("open_tolerance_frames must be >= 0")
        if self.keep_threshold > self.onset_threshold:
            raise ValueError(
                f"keep_threshold ({self.keep_threshold}) must be <= onset_threshold "
                f"({self.onset_threshold}): lower tracker.keep_threshold too"
            )


@dataclass(frozen=True, slots=True)
class TrackEvent:
    """An onset or offset in stream time (the detector adds wall-clock times)."""

    type: str  # "onset" | "offset"
    event_id: str
    label: str
    score: float
    start_s: float
    end_s: float | None = None
    reason: str | None = None
    late: bool = False


@dataclass(slots=True)
class _Track:
    label: str
    start_s: float
    end_s: float
    score: float
    state: str = "pending"  # pending → open → closed; "dropped": a late find not published
    event_id: str = ""
    hits: int = 1  # runs in a row that saw it at onset strength (while pending)
    ended_runs: int = 0  # runs in a row that saw it ended (while open)
    missed: int = 0
    late: bool = False
    cut: bool = False  # first seen cut by the window's left edge


class Tracker:
    """Tracks one stream's actions.

    Args:
        config: thresholds and confirmation counts.
        frame_period_s: 1 / model fps (converts the tolerance in frames to seconds).
        id_prefix: event ids are `id_prefix + counter`.
    """

    def __init__(self, config: TrackerConfig, *, frame_period_s: float, id_prefix: str) -> None:
        self.config = config
        self.period_s = frame_period_s
        self.tolerance_s = config.open_tolerance_frames * frame_period_s
        self.id_prefix = id_prefix
        self._next_id = 0
        self._tracks: list[_Track] = []

    def update(
        self, detections: list[Interval], *, window_start_s: float, window_end_s: float
    ) -> list[TrackEvent]:
        """Feeds one head run's segments; returns the events it causes, in order."""
        c = self.config
        events: list[TrackEvent] = []
        seen: set[int] = set()
        kept: list[Interval] = []
        for det in sorted(
            (d for d in detections if d.score >= c.keep_threshold), key=lambda d: -d.score
        ):
            if c.cross_class_iou < 1 and any(
                k.label != det.label
                and _iou(k.start_s, k.end_s, det, window_start_s) >= c.cross_class_iou
                for k in kept
            ):
                continue  # the same motion, read as a weaker other label
            kept.append(det)
        for det in kept:
            is_open = det.end_s >= window_end_s - self.tolerance_s
            best = self._match(det, window_start_s)
            if best is None:
                if det.score >= c.onset_threshold and not self._other_label(det, window_start_s):
                    cut = bool(det.start_s <= window_start_s + self.period_s)
                    self._tracks.append(
                        _Track(det.label, det.start_s, det.end_s, det.score, cut=cut)
                    )
                    seen.add(len(self._tracks) - 1)
                    events += self._advance(self._tracks[-1], det, is_open, window_end_s)
                continue
            if best in seen:
                continue  # a weaker duplicate of an action already matched in this run
            seen.add(best)
            track = self._tracks[best]
            if track.state in ("closed", "dropped"):
                continue  # a finished action seen again by an overlapping window
            if det.start_s > window_start_s:  # a truncated start says nothing new
                track.start_s = det.start_s
            track.end_s, track.missed = det.end_s, 0
            track.score = max(track.score, det.score)
            if track.state == "pending":
                if det.score < c.onset_threshold:
                    track.hits = 0
                    continue
                track.hits += 1
            events += self._advance(track, det, is_open, window_end_s)
        for i, track in enumerate(self._tracks):
            if i in seen or track.state not in ("pending", "open"):
                continue
            track.missed += 1
            if track.state == "pending":
                track.state = "dropped" if track.missed >= c.close_after_missed_runs else "pending"
                track.hits = 0
            elif track.missed >= c.close_after_missed_runs:
                events.append(self._offset(track, "score_dropped"))
        # Finished actions are kept only while a window can still see them (for matching).
        self._tracks = [
            t for t in self._tracks if t.state in ("pending", "open") or t.end_s > window_start_s
        ]
        return events

    def close_all(self, reason: str, *, at_s: float | None = None) -> list[TrackEvent]:
        """Ends every open action (`at_s`: the end to report, default where last seen)."""
        events = []
        for track in self._tracks:
            if track.state == "open":
                if at_s is not None:
                    track.end_s = max(track.start_s, at_s)
                events.append(self._offset(track, reason))
        self._tracks = []
        return events

    def _match(self, det: Interval, window_start_s: float) -> int | None:
        """The tracked action of det's label that det overlaps most (tIoU ≥ match_iou; the
        latest of equals)."""
        mine = [i for i, t in enumerate(self._tracks) if t.label == det.label]
        if not mine:
            return None
        iou = _ious(det, [self._tracks[i] for i in mine], window_start_s)
        best = len(iou) - 1 - int(np.argmax(iou[::-1]))
        return mine[best] if iou[best] >= self.config.match_iou else None

    def _other_label(self, det: Interval, window_start_s: float) -> bool:
        """Whether det is a live action of another label read again (one motion, one label)."""
        if self.config.cross_class_iou >= 1:
            return False
        others = [
            t for t in self._tracks if t.label != det.label and t.state in ("pending", "open")
        ]
        return bool(others) and bool(
            (_ious(det, others, window_start_s) >= self.config.cross_class_iou).any()
        )

    @staticmethod
    def _reach(track: _Track, det: Interval) -> float:
        """A live action reaches as far as the segment says (it may have gone on, or ended
        since the last run); a closed one ends where it was published."""
        return max(track.end_s, det.end_s) if track.state in ("pending", "open") else track.end_s

    def _advance(
        self, track: _Track, det: Interval, is_open: bool, window_end_s: float
    ) -> list[TrackEvent]:
        """Publishes what this run's sighting `det` of `track` decides: its onset once
        confirmed, its offset once its end is confirmed."""
        c, events = self.config, []
        if track.state == "pending":
            clear = c.confirm_score is not None and det.score >= c.confirm_score
            if track.hits < c.confirm_runs and not clear:
                return []
            track.late = bool(track.cut or window_end_s - track.start_s > c.late_after_s)
            if track.late and c.late_policy == "drop":
                track.state = "dropped"
                return []
            self._next_id += 1
            track.event_id, track.state = f"{self.id_prefix}{self._next_id}", "open"
            events.append(
                TrackEvent(
                    "onset",
                    track.event_id,
                    track.label,
                    track.score,
                    track.start_s,
                    late=track.late,
                )
            )
        track.ended_runs = 0 if is_open else track.ended_runs + 1
        if track.ended_runs >= c.offset_confirm_runs:
            events.append(self._offset(track, "ended"))
        return events

    @staticmethod
    def _offset(track: _Track, reason: str) -> TrackEvent:
        track.state = "closed"
        return TrackEvent(
            "offset",
            track.event_id,
            track.label,
            track.score,
            track.start_s,
            track.end_s,
            reason,
            track.late,
        )


def _iou(start: float, end: float, det: Interval, window_start_s: float) -> float:
    """tIoU of [start, end] and det, both as the window (from window_start_s) sees them: an
    action sliding out of the window's left edge is seen truncated."""
    seen = (max(det.start_s, window_start_s), det.end_s)
    return float(interval_iou(max(start, window_start_s), end, np.array([seen]))[0])


def _ious(det: Interval, tracks: list[_Track], window_start_s: float) -> np.ndarray:
    """`_iou` of det with each track (reaching as far as `Tracker._reach` says), in one call."""
    bounds = np.array(
        [[max(t.start_s, window_start_s), Tracker._reach(t, det)] for t in tracks], np.float64
    )
    return interval_iou(max(det.start_s, window_start_s), det.end_s, bounds)
