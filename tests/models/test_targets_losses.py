import math

import pytest
import torch

from models.actionformer import make_points
from models.losses import diou_loss_1d, sigmoid_focal_loss
from models.targets import make_targets, point_ranges

RANGES = ((0.0, 4.0), (4.0, 8.0), (8.0, float("inf")))


def targets_for(bounds, labels, window=16, radius=1.5):
    points = make_points(window, (1, 2, 4))
    t = make_targets(
        torch.tensor(bounds, dtype=torch.float32),
        torch.tensor(labels),
        points,
        point_ranges(points, RANGES),
        num_classes=3,
        center_radius=radius,
    )
    return points, t


def test_short_action_is_assigned_to_the_finest_level_around_its_centre():
    points, t = targets_for([[4.0, 8.0]], [1])  # centre 6, reach ≤ 4 → level 0 (stride 1)
    pos = points[t.positive]
    # strictly inside [max(4, 6 - 1.5), min(8, 6 + 1.5)] = [4.5, 7.5] at stride 1 → t = 5, 6, 7
    assert pos.tolist() == [[5.0, 1.0], [6.0, 1.0], [7.0, 1.0]]
    assert t.cls[t.positive].tolist() == [[0, 1, 0]] * 3
    assert t.reg[t.positive].tolist() == [[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]]


def test_long_action_goes_to_a_coarse_level_with_offsets_in_stride_units():
    points, t = targets_for([[0.0, 16.0]], [0])  # centre 8; reach 8..16
    pos = points[t.positive].tolist()
    # level 2 (stride 4, range ≥ 8): centre region (8 - 6, 8 + 6) = (2, 14) → t = 4, 8, 12
    # level 1 (stride 2, range 4..8): only t = 8 has reach ≤ 8
    assert pos == [[8.0, 2.0], [4.0, 4.0], [8.0, 4.0], [12.0, 4.0]]
    assert t.reg[t.positive][1].tolist() == [1.0, 3.0]  # (4 - 0) / 4, (16 - 4) / 4


def test_shortest_action_wins_and_equal_lengths_are_multi_hot():
    points, t = targets_for([[2.0, 10.0], [4.0, 8.0]], [0, 1])
    p6 = (points[:, 0] == 6) & (points[:, 1] == 1)
    assert t.cls[p6].tolist() == [[0, 1, 0]]  # [4, 8] is shorter than [2, 10]
    points, t = targets_for([[4.0, 8.0], [4.0, 8.0]], [0, 2])  # same action, two labels
    assert t.cls[p6].tolist() == [[1, 0, 1]]


def test_no_actions_means_no_positives():
    points, t = targets_for(torch.zeros(0, 2).tolist(), [])
    assert not t.positive.any() and t.cls.sum() == 0


def test_focal_loss_by_hand():
    logits, target = torch.tensor([0.0]), torch.tensor([1.0])
    # p = 0.5: ce = ln 2, (1 - p_t)^2 = 0.25, alpha = 0.25
    assert sigmoid_focal_loss(logits, target).item() == pytest.approx(0.25 * 0.25 * math.log(2))
    easy = sigmoid_focal_loss(torch.tensor([-6.0]), torch.tensor([0.0])).item()
    assert easy < 1e-5  # well-classified negatives barely count


def test_diou_loss_by_hand():
    same = diou_loss_1d(torch.tensor([[2.0, 3.0]]), torch.tensor([[2.0, 3.0]]))
    assert same.item() == pytest.approx(0.0, abs=1e-6)
    # pred [-1, 1], target [-2, 2] (left, right from the point): IoU = 2/4, same centre
    assert diou_loss_1d(
        torch.tensor([[1.0, 1.0]]), torch.tensor([[2.0, 2.0]])
    ).item() == pytest.approx(0.5)
    # pred [0, 2] vs target [-2, 0]: no overlap, centres 2 apart, enclosing 4 → 1 + 0.25
    assert diou_loss_1d(
        torch.tensor([[0.0, 2.0]]), torch.tensor([[2.0, 0.0]])
    ).item() == pytest.approx(1.25)
