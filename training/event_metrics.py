"""Event metrics: what a subscriber that acts on every onset receives, scored as it arrives.

Each reported action is one `ReportedAction`: the interval of its offset event (final start
and end), the stream times its onset and offset were published at (`frame_s` of the events:
the newest frame when the decision was taken), and the score known at onset time.

Matching is one-to-one, per video and label: among the pairs with tIoU ≥ threshold, the
assignment with the most pairs and, among those, the largest total tIoU (Hungarian algorithm
on cost −(1 + tIoU)). From it: precision, recall, F1 at tIoU 0.3 / 0.5 / 0.7 (per class too),
and onset / offset delays of the matched pairs at tIoU 0.5 (publication time − true start /
end: what a subscriber waits). Beside it, matching-free counts:
- events per true action: reported actions / true actions;
- split actions: the share of true actions that two or more reported actions of their label
  lie mostly inside (more than half of each reported action's length);
- false events per minute: reported actions unmatched at tIoU 0.5, per minute of video;
- retroactive onsets: onsets published more than `retroactive_s` after the start they carry
  (late finds marked `late` are counted apart, not as retroactive); onset delays are given
  over all matches and over the fresh (not late) onsets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.intervals import Interval, interval_iou, match_events
from training.metrics import detection_map

EVENT_TIOUS = (0.3, 0.5, 0.7)
RETROACTIVE_S = 3.0


@dataclass(frozen=True, slots=True)
class ReportedAction:
    """One onset/offset pair as published: `interval` from the offset (video_id set)."""

    interval: Interval
    onset_s: float
    offset_s: float
    onset_score: float
    late: bool = False
    onset_start_s: float | None = None  # the start the onset carried (default: the final one)

    @property
    def announced_start_s(self) -> float:
        return self.interval.start_s if self.onset_start_s is None else self.onset_start_s


def prf(tp: int, n_reported: int, n_truth: int) -> dict[str, float]:
    precision = tp / n_reported if n_reported else float("nan")
    recall = tp / n_truth if n_truth else float("nan")
    f1 = 2 * tp / (n_reported + n_truth) if n_reported + n_truth else float("nan")
    return {"precision": precision, "recall": recall, "f1": f1, "tp": tp}


def spread(values: list[float]) -> dict[str, float]:
    """median, p90 and max of delays (NaN when there are none) and their count."""
    if not values:
        return {"median_s": float("nan"), "p90_s": float("nan"), "max_s": float("nan"), "count": 0}
    v = np.asarray(values, float)
    return {
        "median_s": float(np.median(v)),
        "p90_s": float(np.percentile(v, 90)),
        "max_s": float(v.max()),
        "count": len(v),
    }


def split_share(reported: list[Interval], truth: list[Interval]) -> float:
    """Share of true actions that two or more same-label reported actions lie mostly inside."""
    if not truth:
        return float("nan")
    split = 0
    for t in truth:
        inside = 0
        for r in reported:
            if r.video_id != t.video_id or r.label != t.label:
                continue
            overlap = min(r.end_s, t.end_s) - max(r.start_s, t.start_s)
            inside += overlap > 0.5 * (r.end_s - r.start_s)
        split += inside >= 2
    return split / len(truth)


WRONG_LABEL_IOU = 0.3


def error_kinds(
    reported: list[Interval], truth: list[Interval], pairs: list[tuple[int, int]]
) -> dict[str, dict[str, int]]:
    """Counts of false events and missed true actions by kind (module doc), given the
    one-to-one `pairs` (reported index, truth index) at tIoU 0.5."""
    matched_r, matched_t = {i for i, _ in pairs}, {j for _, j in pairs}
    false = dict.fromkeys(("mislocated", "wrong_label", "duplicate", "spurious"), 0)
    missed = dict.fromkeys(("mislocated", "wrong_label", "merged", "not_found"), 0)
    for kind, items, others, matched, matched_other, first in (
        (false, reported, truth, matched_r, matched_t, "duplicate"),
        (missed, truth, reported, matched_t, matched_r, "merged"),
    ):
        by_video: dict[str, list[int]] = {}
        for k, o in enumerate(others):
            by_video.setdefault(o.video_id, []).append(k)
        for i, x in enumerate(items):
            if i in matched:
                continue
            near = by_video.get(x.video_id, [])
            bounds = np.array([[others[k].start_s, others[k].end_s] for k in near]).reshape(-1, 2)
            iou = interval_iou(x.start_s, x.end_s, bounds)
            same = np.array([others[k].label == x.label for k in near], bool)
            taken = np.array([k in matched_other for k in near], bool)
            if (same & taken & (iou >= 0.5)).any():
                kind[first] += 1
            elif (same & (iou > 0)).any():
                kind["mislocated"] += 1
            elif (~same & (iou >= WRONG_LABEL_IOU)).any():
                kind["wrong_label"] += 1
            else:
                kind["spurious" if kind is false else "not_found"] += 1
    return {"false": false, "missed": missed}


def event_metrics(
    actions: list[ReportedAction],
    truth: list[Interval],
    *,
    minutes: float,
    retroactive_s: float = RETROACTIVE_S,
    with_map: bool = True,
) -> dict:
    """The event table (see the module doc) of the reported `actions` against `truth`
    (intervals with video_id) over `minutes` of video; `with_map`: the two streaming mAPs
    too (the slow part)."""
    reported = [a.interval for a in actions]
    out: dict = {"true_actions": len(truth), "reported_actions": len(reported)}
    matches = {thr: match_events(reported, truth, thr) for thr in EVENT_TIOUS}
    # keys as strings ("0.5"): the table reads the same from results.json
    out["by_tiou"] = {
        f"{thr:g}": prf(len(m), len(reported), len(truth)) for thr, m in matches.items()
    }
    labels = sorted({t.label for t in truth} | {r.label for r in reported})
    m50 = matches[0.5]
    out["per_class"] = {
        c: prf(
            sum(truth[j].label == c for _, j in m50),
            sum(r.label == c for r in reported),
            sum(t.label == c for t in truth),
        )
        for c in labels
    }
    out["events_per_true_action"] = len(reported) / len(truth) if truth else float("nan")
    out["split_share"] = split_share(reported, truth)
    out["false_per_minute"] = (len(reported) - len(m50)) / minutes if minutes > 0 else float("nan")
    out["errors"] = error_kinds(reported, truth, m50)
    late = [a for a in actions if a.late]
    retro = [a for a in actions if not a.late and a.onset_s - a.announced_start_s > retroactive_s]
    out["retroactive"] = {"bound_s": retroactive_s, "count": len(retro), "late_marked": len(late)}
    out["onset_delay"] = spread([actions[i].onset_s - truth[j].start_s for i, j in m50])
    out["fresh_onset_delay"] = spread(
        [actions[i].onset_s - truth[j].start_s for i, j in m50 if not actions[i].late]
    )
    out["offset_delay"] = spread([actions[i].offset_s - truth[j].end_s for i, j in m50])
    if truth and with_map:
        out["streaming_map"] = detection_map(reported, truth).average_map
        at_onset = [
            Interval(r.start_s, r.end_s, r.label, a.onset_score, r.video_id)
            for r, a in zip(reported, actions, strict=True)
        ]
        out["onset_score_map"] = detection_map(at_onset, truth).average_map
    return out


def event_table(m: dict) -> list[str]:
    """The event metrics as the lines `actstream eval` and `actstream bench` print first."""
    lines = [
        f"events: {m['reported_actions']} reported for {m['true_actions']} true actions "
        "(one-to-one, same label)"
    ]
    for thr, r in m["by_tiou"].items():
        lines.append(
            f"  tIoU {float(thr):.1f}: precision {r['precision']:.3f}  recall {r['recall']:.3f}  "
            f"F1 {r['f1']:.3f}"
        )
    on, off, fr = m["onset_delay"], m["offset_delay"], m["fresh_onset_delay"]
    lines += [
        f"  events per true action {m['events_per_true_action']:.2f}  split "
        f"{100 * m['split_share']:.0f} %  false per minute {m['false_per_minute']:.2f}  "
        f"retroactive (> {m['retroactive']['bound_s']:g} s) {m['retroactive']['count']}"
        f"  late-marked {m['retroactive']['late_marked']}",
        f"  onset delay  median {on['median_s']:.2f} s  p90 {on['p90_s']:.2f} s  "
        f"max {on['max_s']:.2f} s  ({on['count']} matched at tIoU 0.5)",
        f"  fresh onsets median {fr['median_s']:.2f} s  p90 {fr['p90_s']:.2f} s  "
        f"max {fr['max_s']:.2f} s  ({fr['count']} not marked late)",
        f"  offset delay median {off['median_s']:.2f} s  p90 {off['p90_s']:.2f} s  "
        f"max {off['max_s']:.2f} s",
    ]
    if "errors" in m:  # results.json written before it existed have none
        for name, counts in (("false events", "false"), ("missed actions", "missed")):
            kinds = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in m["errors"][counts].items())
            lines.append(f"  {name} (tIoU 0.5): {kinds}")
    if "streaming_map" in m:
        lines.append(
            f"  streaming mAP {m['streaming_map']:.3f}  (with the score known at onset "
            f"{m['onset_score_map']:.3f})"
        )
    per = "  ".join(f"{c} {r['f1']:.2f}" for c, r in m["per_class"].items())
    lines.append(f"  F1 per class (tIoU 0.5): {per}")
    return lines
