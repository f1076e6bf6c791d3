"""FAFormer's losses and the segmentation metrics."""

import itertools

import numpy as np
import pytest
import torch

from models.faformer import FAFormerConfig, FAFormerHead, FrameLabels
from models.intervals import Interval
from models.seg_losses import faformer_losses, hungarian, smoothing_loss
from training.data import frame_labels
from training.seg_metrics import edit_distance, edit_score, f1_counts, segmentation_scores


def seg(s, e, label, score=1.0, vid="v"):
    return Interval(s, e, label, score, vid)


@pytest.mark.parametrize(("n", "m"), [(1, 1), (3, 5), (5, 5), (4, 2)])
def test_hungarian_finds_the_minimum_cost_assignment(n, m):
    rng = np.random.default_rng(n * 10 + m)
    for _ in range(10):
        cost = rng.random((n, m))
        pairs = hungarian(cost)
        assert len(pairs) == min(n, m)
        assert len({r for r, _ in pairs}) == len({c for _, c in pairs}) == len(pairs)
        if n <= m:
            options = [
                zip(range(n), cols, strict=True) for cols in itertools.permutations(range(m), n)
            ]
        else:
            options = [
                zip(rows, range(m), strict=True) for rows in itertools.permutations(range(n), m)
            ]
        best = min(sum(cost[r, c] for r, c in pairs) for pairs in options)
        assert sum(cost[r, c] for r, c in pairs) == pytest.approx(best)


def test_edit_distance_and_score():
    assert edit_distance(list("kitten"), list("sitting")) == 3
    gt = [seg(0, 1, "a"), seg(2, 3, "b"), seg(4, 5, "a")]
    assert edit_score(gt, gt) == 100.0
    assert edit_score([seg(0, 1, "a"), seg(4, 5, "a")], gt) == pytest.approx(100 * (1 - 1 / 3))
    assert edit_score([], []) is None  # undefined: 0 / 0


def test_f1_matches_segments_of_the_same_class_once():
    gt = [seg(0, 10, "a"), seg(20, 30, "b")]
    pred = [seg(1, 10, "a"), seg(2, 11, "a"), seg(20, 24, "b"), seg(20, 30, "a")]
    assert f1_counts(pred, gt, 0.5) == (1, 3, 1)  # b at IoU 0.4 misses; a matched once
    assert f1_counts(pred, gt, 0.1) == (2, 2, 0)


def test_f1_takes_the_best_overlapping_true_segment_as_the_official_rule_does():
    gt = [seg(0, 10, "a"), seg(10, 20, "a")]
    pred = [seg(0, 10, "a"), seg(2, 14, "a")]  # the second overlaps the first gt most
    # IoU 8/14 with the matched first, 4/18 with the free second: a false positive
    assert f1_counts(pred, gt, 0.2) == (1, 1, 1)


def test_f1_at_an_iou_of_exactly_tau_is_a_match():
    gt = [seg(1 * 0.1, 5 * 0.1, "a")]  # frames 1-5 at 10 fps, times as frame × period
    pred = [seg(3 * 0.1, 5 * 0.1, "a")]  # frames 3-5: IoU 2/4, 0.4999999999999999 in seconds
    assert f1_counts(pred, gt, 0.5) == (0, 1, 1)
    assert f1_counts(pred, gt, 0.5, step_s=0.1) == (1, 0, 0)
    got = segmentation_scores({"v": pred}, {"v": gt}, ("a",), {"v": 10}, 0.1)
    assert got["f1@50"] == 100.0


def test_edit_leaves_out_videos_with_no_segment_on_either_side():
    gt = {"v": [seg(0.0, 1.0, "a")], "empty": []}
    got = segmentation_scores(gt, gt, ("a",), {"v": 20, "empty": 20}, 0.1)
    assert got["edit"] == 100.0  # the empty video is not a perfect 100 nor a 0
    wrong = segmentation_scores(
        {"v": [seg(0.0, 1.0, "b")]}, gt, ("a", "b"), {"v": 20, "empty": 20}, 0.1
    )
    assert wrong["edit"] == 0.0


def test_segmentation_scores_perfect_and_empty():
    gt = {"v": [seg(0.0, 1.0, "a"), seg(1.5, 2.5, "b")]}
    perfect = segmentation_scores(gt, gt, ("a", "b"), {"v": 30}, 0.1)
    assert perfect == {
        "frame_accuracy": 100.0,
        "edit": 100.0,
        "f1@10": 100.0,
        "f1@25": 100.0,
        "f1@50": 100.0,
        "sample_precision": 100.0,
        "sample_recall": 100.0,
        "sample_f1": 100.0,
    }
    empty = segmentation_scores({}, gt, ("a", "b"), {"v": 30}, 0.1)
    assert empty["f1@50"] == 0.0 and empty["frame_accuracy"] == pytest.approx(100 * 10 / 30)
    # every sample NULL: a and b score 0; NULL has precision 10/30, recall 1, F1 0.5
    assert empty["sample_f1"] == pytest.approx(100 * 0.5 / 3)
    assert empty["sample_recall"] == pytest.approx(100 / 3)


def test_sample_scores_with_a_null_class_by_hand():
    gt = {"v": [seg(0.0, 1.0, "a"), seg(1.5, 2.5, "b")]}
    pred = {"v": [seg(0.0, 0.5, "a"), seg(1.5, 2.5, "b")]}
    got = segmentation_scores(pred, gt, ("a", "b"), {"v": 30}, 0.1)
    # samples: a→a 5, a→NULL 5, b→b 10, NULL→NULL 10
    # precision a 1, b 1, NULL 10/15; recall a 0.5, b 1, NULL 1; F1 2/3, 1, 0.8
    assert got["sample_precision"] == pytest.approx(100 * (1 + 1 + 2 / 3) / 3)
    assert got["sample_recall"] == pytest.approx(100 * (0.5 + 1 + 1) / 3)
    assert got["sample_f1"] == pytest.approx(100 * (2 / 3 + 1 + 0.8) / 3)


def test_frame_labels_are_multi_hot_for_overlapping_actions():
    labels = frame_labels(np.array([[1.0, 4.0], [3.0, 6.0]]), np.array([0, 2]), 8, 3)
    assert labels[:, 0].tolist() == [0, 1, 1, 1, 0, 0, 0, 0]
    assert labels[:, 2].tolist() == [0, 0, 0, 1, 1, 1, 0, 0]
    assert labels[3].tolist() == [1, 0, 1]


def test_smoothing_loss_is_zero_for_constant_predictions_and_ignores_padding():
    logits = torch.full((1, 10, 3), 2.0)
    valid = torch.ones(1, 10, dtype=torch.bool)
    assert smoothing_loss(logits, valid) == 0
    jumpy = logits.clone()
    jumpy[0, :3] = -50.0
    assert smoothing_loss(jumpy, valid) > 0
    valid[0, :3] = False  # the jump lies on padding
    assert smoothing_loss(jumpy, valid) == 0


def test_faformer_losses_fit_one_batch():
    torch.manual_seed(0)
    head = FAFormerHead(
        FAFormerConfig(window_frames=16, dim=32, num_tokens=4, num_heads=2, blocks=("i", "u", "U")),
        in_dim=8,
        num_classes=2,
    )
    x = torch.randn(2, 16, 8)
    valid = torch.ones(2, 16, dtype=torch.bool)
    segments = [torch.tensor([[2.0, 7.0, 0.0], [9.0, 14.0, 1.0]]), torch.zeros(0, 3)]
    labels = torch.stack(
        [frame_labels(s[:, :2].numpy(), s[:, 2].long().numpy(), 16, 2) for s in segments]
    )
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)
    first = None
    for _ in range(60):
        losses = faformer_losses(
            head(x, valid), labels, segments, smooth_weight=0.15, token_weight=1.0
        )
        first = first or {k: v.item() for k, v in losses.items()}
        opt.zero_grad()
        losses["total"].backward()
        opt.step()
    assert losses["total"].item() < 0.3 * first["total"]
    out: FrameLabels = head(x, valid)
    assert ((out.frame_logits.sigmoid() > 0.5).float() == labels).float().mean() > 0.95
    assert out.token_logits[1].argmax(-1).eq(2).all()  # the empty window: every token "no action"
