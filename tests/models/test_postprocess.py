import math

import numpy as np
import pytest
import torch

from models.postprocess import Segments, decode_segments, soft_nms


def test_decode_turns_offsets_in_stride_units_into_frame_bounds():
    points = torch.tensor([[4.0, 1.0], [8.0, 4.0]])
    logits = torch.tensor([[5.0, -9.0], [-9.0, 5.0]])
    offsets = torch.tensor([[2.0, 3.0], [1.5, 0.5]])
    seg = decode_segments(logits, offsets, points, pre_nms_threshold=0.5, min_duration=0.0)
    order = seg.labels.argsort()
    assert seg.bounds[order].tolist() == [[2.0, 7.0], [2.0, 10.0]]
    assert seg.labels[order].tolist() == [0, 1]
    assert seg.scores[order].tolist() == pytest.approx([1 / (1 + math.exp(-5))] * 2)


def test_decode_drops_low_scores_short_segments_and_invalid_points_and_clips():
    points = torch.tensor([[0.0, 1.0], [5.0, 1.0], [9.0, 1.0]])
    logits = torch.tensor([[4.0], [4.0], [-4.0]])
    offsets = torch.tensor([[3.0, 2.0], [0.1, 0.1], [1.0, 1.0]])
    seg = decode_segments(
        logits,
        offsets,
        points,
        torch.tensor([True, True, True]),
        pre_nms_threshold=0.5,
        min_duration=0.5,
        window_frames=10,
    )
    assert seg.bounds.tolist() == [[0.0, 2.0]]  # start clipped to 0; short one dropped
    seg = decode_segments(
        logits,
        offsets,
        points,
        torch.tensor([False, True, True]),
        pre_nms_threshold=0.5,
        min_duration=0.0,
    )
    assert seg.bounds[0].tolist() == pytest.approx([4.9, 5.1])


def test_decode_keeps_the_topk_best():
    points = torch.stack([torch.arange(10.0), torch.ones(10)], 1)
    logits = torch.arange(10.0)[:, None]
    seg = decode_segments(
        logits, torch.ones(10, 2), points, pre_nms_threshold=0.0, pre_nms_topk=3, min_duration=0.0
    )
    assert sorted(seg.bounds[:, 0].tolist()) == [6.0, 7.0, 8.0]


def test_soft_nms_stopped_at_a_threshold_keeps_exactly_the_segments_above_it():
    """What the detector relies on when it stops soft-NMS at the tracker's onset threshold."""
    g = torch.Generator().manual_seed(0)
    start = torch.rand(300, generator=g) * 100
    seg = Segments(
        torch.stack([start, start + 1 + torch.rand(300, generator=g) * 20], 1),
        torch.rand(300, generator=g),
        torch.randint(0, 4, (300,), generator=g),
    )
    full = soft_nms(seg, min_score=0.001, max_segments=300)
    stopped = soft_nms(seg, min_score=0.3, max_segments=300)
    strong = full.scores >= 0.3
    assert torch.equal(stopped.bounds, full.bounds[strong])
    assert torch.equal(stopped.labels, full.labels[strong])
    assert torch.allclose(stopped.scores, full.scores[strong])


def test_soft_nms_decays_overlapping_same_class_segments_by_a_gaussian():
    seg = Segments(
        torch.tensor([[0.0, 10.0], [5.0, 15.0], [0.0, 10.0], [40.0, 50.0]]),
        torch.tensor([0.9, 0.8, 0.7, 0.6]),
        torch.tensor([0, 0, 1, 0]),
    )
    kept = soft_nms(seg, sigma=0.5, min_score=0.0)
    expected_second = 0.8 * math.exp(-((5 / 15) ** 2) / 0.5)
    assert kept.scores.tolist() == pytest.approx([0.9, 0.7, expected_second, 0.6])
    assert kept.labels.tolist() == [0, 1, 0, 0]  # the class-1 segment was not decayed


def test_soft_nms_removes_exact_duplicates_below_min_score_and_caps_the_count():
    seg = Segments(
        torch.tensor([[0.0, 10.0]] * 3), torch.tensor([0.9, 0.9, 0.9]), torch.tensor([0, 0, 0])
    )
    kept = soft_nms(seg, sigma=0.5, min_score=0.2)
    # After the first pick the others decay by exp(-1/0.5) = 0.135 → 0.122 < 0.2.
    assert kept.scores.tolist() == pytest.approx([0.9])
    starts = torch.arange(20.0) * 10  # 20 disjoint segments, all scores well above min_score
    many = Segments(
        torch.stack([starts, starts + 5], 1),
        torch.linspace(0.2, 0.9, 20),
        torch.zeros(20, dtype=torch.long),
    )
    assert len(soft_nms(many, max_segments=5).scores) == 5


def test_soft_nms_of_nothing_is_nothing():
    empty = Segments(torch.zeros(0, 2), torch.zeros(0), torch.zeros(0, dtype=torch.long))
    assert len(soft_nms(empty).scores) == 0


def test_interval_iou_by_hand():
    from models.intervals import interval_iou

    bounds = np.array([[0.0, 2.0], [1.0, 3.0], [2.0, 4.0], [5.0, 5.0], [0.5, 1.5]])
    got = interval_iou(0.0, 2.0, bounds)
    # same; overlap 1 of union 3; touching; empty and apart; inside (1 of 2)
    np.testing.assert_allclose(got, [1.0, 1 / 3, 0.0, 0.0, 0.5])
    assert interval_iou(1.0, 1.0, np.array([[1.0, 1.0]])).tolist() == [0.0]  # empty union
