"""mAP with hand-computed answers (ActivityNet protocol)."""

import math

import numpy as np
import pytest

from models.intervals import Interval
from training.metrics import detection_map, interpolated_ap, match_detections


def gt(v, s, e, label="a"):
    return Interval(s, e, label, video_id=v)


def det(v, s, e, score, label="a"):
    return Interval(s, e, label, score, v)


def test_interpolated_ap_by_hand():
    # TP, FP, TP over 2 positives: P = 1, 1/2, 2/3 at R = 1/2, 1/2, 1 → envelope 1 then 2/3
    assert interpolated_ap(np.array([True, False, True]), 2) == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert interpolated_ap(np.array([False, True]), 1) == pytest.approx(0.5)
    assert interpolated_ap(np.array([], bool), 3) == 0.0
    assert math.isnan(interpolated_ap(np.array([True]), 0))


def test_duplicate_detections_count_once_then_as_false_positives():
    gts = [gt("v", 0, 10)]
    dets = [det("v", 0, 10, 0.9), det("v", 0, 10, 0.8), det("v", 1, 10, 0.7)]
    tp, which = match_detections(dets, gts, 0.5)
    assert tp.tolist() == [True, False, False] and which == [0, None, None]
    assert detection_map(dets, gts, (0.5,)).average_map == pytest.approx(1.0)
    # the duplicate ranked first lowers AP: FP then TP → P = 1/2 at R = 1
    dets = [det("v", 20, 30, 0.95), det("v", 0, 10, 0.9)]
    assert detection_map(dets, gts, (0.5,)).average_map == pytest.approx(0.5)


def test_detection_that_could_match_two_ground_truths_takes_the_best_unmatched_one():
    gts = [gt("v", 0, 10), gt("v", 6, 16)]
    # tIoU with gt0 = 6/12 = 0.5, with gt1 = 8/10 = 0.8 → gt1
    d1 = det("v", 6, 14, 0.9)
    # next detection overlaps gt1 best (8/10) but gt1 is taken → gt0 (tIoU 4/14 < 0.5 → FP at 0.5)
    d2 = det("v", 4, 14, 0.8)
    tp, which = match_detections([d1, d2], gts, 0.5)
    assert which == [1, None] and tp.tolist() == [True, False]
    tp, which = match_detections([d1, d2], gts, 0.25)
    assert which == [1, 0] and tp.tolist() == [True, True]


def test_class_with_no_predictions_scores_zero_and_classes_without_ground_truth_are_ignored():
    gts = [gt("v", 0, 10, "a"), gt("v", 20, 30, "b")]
    dets = [det("v", 0, 10, 0.9, "a"), det("v", 40, 50, 0.9, "c")]
    result = detection_map(dets, gts, (0.5,))
    assert result.ap_by_class[0.5] == {"a": 1.0, "b": 0.0}
    assert result.average_map == pytest.approx(0.5)


def test_ties_in_score_keep_input_order():
    gts = [gt("v", 0, 10)]
    first_right = [det("v", 0, 10, 0.5), det("v", 50, 60, 0.5)]
    first_wrong = [det("v", 50, 60, 0.5), det("v", 0, 10, 0.5)]
    assert detection_map(first_right, gts, (0.5,)).average_map == pytest.approx(1.0)
    assert detection_map(first_wrong, gts, (0.5,)).average_map == pytest.approx(0.5)


def test_detections_only_match_ground_truth_of_their_own_video():
    gts = [gt("v1", 0, 10)]
    assert detection_map([det("v2", 0, 10, 0.9)], gts, (0.5,)).average_map == 0.0


def test_map_averages_over_thresholds():
    gts = [gt("v", 0, 10)]
    dets = [det("v", 0, 6, 0.9)]  # tIoU 0.6: TP at 0.3..0.6, FP at 0.7
    result = detection_map(dets, gts)
    assert result.map_by_tiou == {0.3: 1.0, 0.4: 1.0, 0.5: 1.0, 0.6: 1.0, 0.7: 0.0}
    assert result.average_map == pytest.approx(0.8)


def test_two_videos_two_classes_by_hand():
    gts = [gt("v1", 0, 10, "a"), gt("v2", 0, 10, "a"), gt("v1", 30, 40, "b")]
    dets = [
        det("v1", 0, 10, 0.9, "a"),
        det("v1", 50, 60, 0.8, "a"),
        det("v2", 1, 10, 0.7, "a"),
        det("v1", 30, 38, 0.6, "b"),
    ]
    # a: TP FP TP over 2 → 0.5 + 0.5 * 2/3; b: tIoU 0.8 → 1.0
    result = detection_map(dets, gts, (0.5,))
    assert result.ap_by_class[0.5]["a"] == pytest.approx(0.5 + 1 / 3)
    assert result.average_map == pytest.approx((0.5 + 1 / 3 + 1.0) / 2)
