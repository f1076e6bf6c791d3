"""Detection metrics as pure functions: tIoU, ActivityNet-protocol average precision and mAP.

Protocol (ActivityNet / ActionFormer): per class, detections are sorted by score (ties keep
their input order); each is matched to the unmatched ground truth of the same class and video
with the highest tIoU, if that tIoU reaches the threshold, else it is a false positive; each
ground truth is matched at most once. AP is the all-point interpolated area under the
precision-recall curve. mAP averages AP over the classes present in the ground truth (a class
with ground truth but no detections scores 0).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from models.intervals import Interval, interval_iou

TIOU_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)


def match_detections(
    detections: list[Interval], ground_truth: list[Interval], threshold: float
) -> tuple[np.ndarray, list[int | None]]:
    """Greedy matching of one class. Returns tp (D,) bool in score order and, for each
    detection in that order, the index of the ground truth it matched (or None)."""
    order = sorted(range(len(detections)), key=lambda i: -detections[i].score)  # stable
    by_video: dict[str, list[int]] = defaultdict(list)
    for j, gt in enumerate(ground_truth):
        by_video[gt.video_id].append(j)
    bounds = np.array([[g.start_s, g.end_s] for g in ground_truth], float).reshape(-1, 2)
    matched = np.zeros(len(ground_truth), bool)
    tp = np.zeros(len(detections), bool)
    which: list[int | None] = []
    for rank, i in enumerate(order):
        det = detections[i]
        candidates = [j for j in by_video.get(det.video_id, []) if not matched[j]]
        best = None
        if candidates:
            ious = interval_iou(det.start_s, det.end_s, bounds[candidates])
            k = int(np.argmax(ious))
            if ious[k] >= threshold:
                best = candidates[k]
        if best is not None:
            matched[best] = True
            tp[rank] = True
        which.append(best)
    return tp, which


def interpolated_ap(tp: np.ndarray, num_positives: int) -> float:
    """All-point interpolated AP from the TP flags of score-sorted detections."""
    if num_positives == 0:
        return float("nan")
    if len(tp) == 0:
        return 0.0
    ctp = np.cumsum(tp)
    cfp = np.cumsum(~tp)
    recall = ctp / num_positives
    precision = ctp / (ctp + cfp)
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    idx = np.nonzero(mrec[1:] != mrec[:-1])[0] + 1
    return float(np.sum((mrec[idx] - mrec[idx - 1]) * mpre[idx]))


@dataclass(frozen=True)
class MapResult:
    """mAP per tIoU threshold, their average, and AP per class at each threshold."""

    map_by_tiou: dict[float, float]
    average_map: float
    ap_by_class: dict[float, dict[str, float]]


def detection_map(
    detections: list[Interval],
    ground_truth: list[Interval],
    thresholds: tuple[float, ...] = TIOU_THRESHOLDS,
) -> MapResult:
    classes = sorted({g.label for g in ground_truth})
    if not classes:
        raise ValueError("no ground truth to evaluate against")
    dets_by = defaultdict(list)
    for d in detections:
        dets_by[d.label].append(d)
    gts_by = defaultdict(list)
    for g in ground_truth:
        gts_by[g.label].append(g)
    ap_by_class: dict[float, dict[str, float]] = {}
    for thr in thresholds:
        ap_by_class[thr] = {}
        for c in classes:
            tp, _ = match_detections(dets_by.get(c, []), gts_by[c], thr)
            ap_by_class[thr][c] = interpolated_ap(tp, len(gts_by[c]))
    map_by = {thr: float(np.mean(list(ap_by_class[thr].values()))) for thr in thresholds}
    return MapResult(map_by, float(np.mean(list(map_by.values()))), ap_by_class)
