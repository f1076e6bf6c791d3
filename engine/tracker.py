"""Segments seen in overlapping windows → exactly one onset and one offset per action.

Pure logic, per stream, in stream time; no clocks. Each head run gives the segments of the
window that ends at `window_end_s`. A segment that reaches the window's end (within a
tolerance) is *open*: the action is still going on. Segments are matched to tracked actions
of the same label by tIoU (an open action is compared as if it lasted as long as the segment),
so the same action seen by many overlapping windows stays one action; only the part inside the
current window is compared, since a window sees an older action truncated at its left edge.

* a new open segment → `onset`;
* a tracked open action whose segment now ends before the window's end → `offset` (reason
  "ended") with its final start and end;
* a tracked open action not seen for `close_after_missed_runs` runs → `offset`
  ("score_dropped"), ending where it was last seen;
* a new segment that already ended (a short action between two head runs) → `onset` and
  `offset` together;
* `close_all` ends every open action (stream ended, disconnected, shutdown).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.loader import check_positive, check_unit
from models.intervals import Interval, interval_iou


@dataclass(frozen=True, kw_only=True)
class TrackerConfig:
    """Segments → one onset and one offset per action.

    Attributes:
        onset_threshold: a segment needs this score to open (or be) an action.
        match_iou: a segment with at least this tIoU with a tracked action of the same label
            is that action seen again.
        open_tolerance_frames: a segment ending within this many frames of the window's end
            is still open (the action goes on).
        close_after_missed_runs: an open action not seen in this many head runs in a row is
            closed (its score fell away).
    """

    onset_threshold: float = 0.3
    match_iou: float = 0.3
    open_tolerance_frames: float = 2.0
    close_after_missed_runs: int = 2

    def __post_init__(self) -> None:
        check_unit(self, "onset_threshold", "match_iou")
        check_positive(self, "close_after_missed_runs")
        if self.open_tolerance_frames < 0:
            raise ValueError("open_tolerance_frames must be >= 0")


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


@dataclass(slots=True)
class _Track:
    event_id: str
    label: str
    start_s: float
    end_s: float
    score: float
    open: bool
    missed: int = 0


class Tracker:
    """Tracks one stream's actions.

    Args:
        config: thresholds.
        frame_period_s: 1 / model fps (converts the tolerance in frames to seconds).
        id_prefix: event ids are `id_prefix + counter`.
    """

    def __init__(self, config: TrackerConfig, *, frame_period_s: float, id_prefix: str) -> None:
        self.config = config
        self.tolerance_s = config.open_tolerance_frames * frame_period_s
        self.id_prefix = id_prefix
        self._next_id = 0
        self._tracks: list[_Track] = []

    def _new_id(self) -> str:
        self._next_id += 1
        return f"{self.id_prefix}{self._next_id}"

    def update(
        self, detections: list[Interval], *, window_start_s: float, window_end_s: float
    ) -> list[TrackEvent]:
        """Feeds one head run's segments; returns the events it causes, in order."""
        events: list[TrackEvent] = []
        seen: set[int] = set()
        strong = sorted(
            (d for d in detections if d.score >= self.config.onset_threshold),
            key=lambda d: -d.score,
        )
        for det in strong:
            is_open = det.end_s >= window_end_s - self.tolerance_s
            best, best_iou = None, self.config.match_iou
            for i, track in enumerate(self._tracks):
                if track.label != det.label:
                    continue
                # Compare what this window can see of the track: an action sliding out of the
                # window's left edge is seen truncated; an open one reaches as far as the
                # detection says (it may have gone on, or ended since the last run).
                start = max(track.start_s, window_start_s)
                end = max(track.end_s, det.end_s) if track.open else track.end_s
                seen_s = (max(det.start_s, window_start_s), det.end_s)
                iou = float(interval_iou(start, end, np.array([seen_s]))[0])
                if iou >= best_iou:
                    best, best_iou = i, iou
            if best is None:
                track = _Track(
                    self._new_id(), det.label, det.start_s, det.end_s, det.score, is_open
                )
                self._tracks.append(track)
                seen.add(len(self._tracks) - 1)
                events.append(
                    TrackEvent("onset", track.event_id, det.label, det.score, det.start_s)
                )
                if not is_open:
                    events.append(self._offset(track, "ended"))
                continue
            if best in seen:
                continue  # a weaker duplicate of an action already matched in this run
            seen.add(best)
            track = self._tracks[best]
            if not track.open:
                continue  # a finished action seen again by an overlapping window
            if det.start_s > window_start_s:  # a truncated start says nothing new
                track.start_s = det.start_s
            track.end_s, track.missed = det.end_s, 0
            track.score = max(track.score, det.score)
            if not is_open:
                events.append(self._offset(track, "ended"))
        for i, track in enumerate(self._tracks):
            if track.open and i not in seen:
                track.missed += 1
                if track.missed >= self.config.close_after_missed_runs:
                    events.append(self._offset(track, "score_dropped"))
        # Closed actions are kept only while a window can still see them (for matching).
        self._tracks = [t for t in self._tracks if t.open or t.end_s > window_start_s]
        return events

    def close_all(self, reason: str, *, at_s: float | None = None) -> list[TrackEvent]:
        """Ends every open action (`at_s`: the end to report, default where last seen)."""
        events = []
        for track in self._tracks:
            if track.open:
                if at_s is not None:
                    track.end_s = max(track.start_s, at_s)
                events.append(self._offset(track, reason))
        self._tracks = []
        return events

    @staticmethod
    def _offset(track: _Track, reason: str) -> TrackEvent:
        track.open = False
        return TrackEvent(
            "offset", track.event_id, track.label, track.score, track.start_s, track.end_s, reason
        )
