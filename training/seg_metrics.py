"""Action segmentation metrics: frame accuracy, segmental edit score, F1@{10, 25, 50}.

As in MS-TCN / ASFormer evaluations, extended to several actors whose actions overlap:

* frame accuracy — each frame's prediction is one label (the most probable class at or above
  the threshold, else background); it is right when the frame shows that class (or nothing,
  for background);
* edit score — 100 · (1 − Levenshtein distance / longer length) between the predicted and
  true sequences of segment labels, in start-time order, averaged over videos; a video with
  no segment on either side has none (0 / 0) and is left out of the mean (NaN if all are);
* F1@τ — the official matching rule on frame indices: each predicted segment (in start order)
  takes the true segment of its class it overlaps most, and is a true positive when that IoU
  reaches τ and that true segment is not matched yet; F1 = 2PR / (P + R), in percent;
* sample-level precision, recall and F1 with a NULL class (the inertial-HAR literature's
  second metric) — every frame is one sample labelled with a class or NULL (nothing going
  on), scored per class from the confusion of predicted and true labels (a frame showing
  several classes counts as the predicted one when it is among them) and macro-averaged
  over the classes that occur, NULL included, in percent.

Inputs are segments in seconds (`models.intervals.Interval`) per video, so the same scores
apply to offline frame labels, to ActionFormer's segments and to the detector's events.
"""

from __future__ import annotations

import numpy as np

from models.intervals import Interval

F1_THRESHOLDS = (0.10, 0.25, 0.50)


def edit_distance(a: list[str], b: list[str]) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


def edit_score(pred: list[Interval], gt: list[Interval]) -> float | None:
    """None when neither has a segment (0 / 0: undefined, as in the official evaluation,
    which divides by zero there); such videos are left out of the mean."""
    p = [s.label for s in sorted(pred, key=lambda s: s.start_s)]
    g = [s.label for s in sorted(gt, key=lambda s: s.start_s)]
    if not p and not g:
        return None
    return 100.0 * (1 - edit_distance(p, g) / max(len(p), len(g)))


def f1_counts(
    pred: list[Interval], gt: list[Interval], tau: float, step_s: float | None = None
) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives) at IoU threshold tau, by the
    official rule (MS-TCN / ASFormer / FACT evaluators): in start order, each predicted
    segment takes the true segment of its class it overlaps most; a hit when that IoU
    reaches tau and that true segment is not matched yet, else a false positive. `step_s`:
    IoU on whole frame indices (start / step_s rounded), so that an IoU of exactly tau is
    exactly tau (in seconds 0.5 can come out as 0.4999999999999999)."""

    def bounds(s: Interval) -> tuple[float, float]:
        if step_s is None:
            return s.start_s, s.end_s
        return round(s.start_s / step_s), round(s.end_s / step_s)

    tp = fp = 0
    used: set[int] = set()
    for s in sorted(pred, key=lambda s: s.start_s):
        p0, p1 = bounds(s)
        best, best_iou = None, 0.0
        for j, g in enumerate(gt):
            if g.label != s.label:
                continue
            g0, g1 = bounds(g)
            inter = min(p1, g1) - max(p0, g0)
            union = max(p1, g1) - min(p0, g0)
            iou = inter / union if inter > 0 and union > 0 else 0.0
            if best is None or iou > best_iou:
                best, best_iou = j, iou
        if best is not None and best_iou >= tau and best not in used:
            tp += 1
            used.add(best)
        else:
            fp += 1
    return tp, fp, len(gt) - len(used)


def frame_labels_of(segments: list[Interval], classes: tuple[str, ...], n: int, step_s: float):
    """(n, K) bool: frame i (centre (i + 0.5) · step_s) lies in a segment of class k."""
    out = np.zeros((n, len(classes)), bool)
    centres = (np.arange(n) + 0.5) * step_s
    index = {c: k for k, c in enumerate(classes)}
    for s in segments:
        out[(centres >= s.start_s) & (centres < s.end_s), index[s.label]] = True
    return out


def segmentation_scores(
    pred: dict[str, list[Interval]],
    gt: dict[str, list[Interval]],
    classes: tuple[str, ...],
    lengths: dict[str, int],
    step_s: float,
    scores: dict[str, np.ndarray] | None = None,
    threshold: float = 0.5,
) -> dict[str, float]:
    """Frame accuracy, edit score and F1@10/25/50 (percent) over videos. `scores` (per video
    (n, K) frame probabilities) picks each frame's one label (background below `threshold`);
    without it a frame takes the class of its highest-scoring covering segment."""
    correct = total = 0
    edits = []
    counts = {t: np.zeros(3, int) for t in F1_THRESHOLDS}
    K = len(classes)
    confusion = np.zeros((K + 1, K + 1), np.int64)  # [true, predicted]; index K is NULL
    for vid, g in gt.items():
        p = pred.get(vid, [])
        n = lengths[vid]
        truth = frame_labels_of(g, classes, n, step_s)
        if scores is not None:
            prob = scores[vid]
        else:
            prob = np.zeros((n, len(classes)))
            centres = (np.arange(n) + 0.5) * step_s
            for s in p:
                inside = (centres >= s.start_s) & (centres < s.end_s)
                k = classes.index(s.label)
                prob[inside, k] = np.maximum(prob[inside, k], max(s.score, 1e-6))
        best = prob.argmax(1)
        on = prob.max(1) > 0 if scores is None else prob.max(1) >= threshold
        right = np.where(on, truth[np.arange(n), best], ~truth.any(1))
        correct += int(right.sum())
        predicted = np.where(on, best, K)
        first_true = np.where(truth.any(1), truth.argmax(1), K)
        np.add.at(confusion, (np.where(right, predicted, first_true), predicted), 1)
        total += n
        edit = edit_score(p, g)
        if edit is not None:
            edits.append(edit)
        for t in F1_THRESHOLDS:
            counts[t] += f1_counts(p, g, t, step_s)
    out = {
        "frame_accuracy": 100.0 * correct / max(total, 1),
        "edit": float(np.mean(edits)) if edits else float("nan"),
    }
    for t, (tp, fp, fn) in counts.items():
        precision, recall = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
        f1 = 2 * precision * recall / max(precision + recall, 1e-12)
        out[f"f1@{round(t * 100)}"] = 100.0 * f1
    out.update(sample_scores(confusion))
    return out


def sample_scores(confusion: np.ndarray) -> dict[str, float]:
    """Macro precision, recall and F1 (percent) from a [true, predicted] confusion matrix,
    over the classes that occur in either (its last row and column: NULL)."""
    tp = np.diag(confusion).astype(float)
    predicted, true = confusion.sum(0), confusion.sum(1)
    present = (predicted + true) > 0
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, true, out=np.zeros_like(tp), where=true > 0)
    f1 = np.divide(
        2 * precision * recall,
        precision + recall,
        out=np.zeros_like(tp),
        where=(precision + recall) > 0,
    )
    return {
        "sample_precision": 100.0 * float(precision[present].mean()) if present.any() else 0.0,
        "sample_recall": 100.0 * float(recall[present].mean()) if present.any() else 0.0,
        "sample_f1": 100.0 * float(f1[present].mean()) if present.any() else 0.0,
    }
