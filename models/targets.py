"""Training targets for the ActionFormer head, as pure functions on the frame grid.

Label assignment after ActionFormer: a point (position t, level stride s) is a positive for a
ground-truth action [a, b] when t lies strictly inside the action's centre region
[max(a, c - r·s), min(b, c + r·s)] (c the centre, r the centre-sampling radius) and
max(t - a, b - t) falls in its level's regression range. Among several such actions the
shortest wins; actions within 1e-3 of that length are all positives (multi-hot labels).
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class Targets(NamedTuple):
    """For P points and K classes: cls (P, K) in {0, 1}; reg (P, 2) distances to start and
    end in stride units (0 where not positive); positive (P,) bool."""

    cls: torch.Tensor
    reg: torch.Tensor
    positive: torch.Tensor


def point_ranges(
    points: torch.Tensor, regression_ranges: tuple[tuple[float, float], ...]
) -> torch.Tensor:
    """(P, 2) regression range of each point, from its stride's level (stride 2**level)."""
    levels = torch.log2(points[:, 1]).round().long()
    if int(levels.max()) >= len(regression_ranges):
        raise ValueError(f"{int(levels.max()) + 1} levels but {len(regression_ranges)} ranges")
    return torch.tensor(regression_ranges, dtype=points.dtype)[levels]


def make_targets(
    bounds: torch.Tensor,
    labels: torch.Tensor,
    points: torch.Tensor,
    ranges: torch.Tensor,
    *,
    num_classes: int,
    center_radius: float = 1.5,
) -> Targets:
    """Args: bounds (N, 2) actions [start, end] in frames; labels (N,) long; points (P, 2)
    position and stride; ranges (P, 2) from `point_ranges`."""
    P = points.shape[0]
    if bounds.numel() == 0:
        return Targets(
            torch.zeros(P, num_classes), torch.zeros(P, 2), torch.zeros(P, dtype=torch.bool)
        )
    t, s = points[:, 0:1], points[:, 1:2]  # (P, 1)
    a, b = bounds[None, :, 0], bounds[None, :, 1]  # (1, N)
    left, right = t - a, b - t  # (P, N)
    centre = (a + b) / 2
    inside_centre = (t > torch.maximum(a, centre - center_radius * s)) & (
        t < torch.minimum(b, centre + center_radius * s)
    )
    reach = torch.maximum(left, right)
    in_range = (reach >= ranges[:, 0:1]) & (reach <= ranges[:, 1:2])
    ok = inside_centre & in_range  # (P, N)
    length = (b - a).expand(P, -1).masked_fill(~ok, float("inf"))
    shortest, best = length.min(dim=1)  # (P,)
    positive = torch.isfinite(shortest)
    ties = ok & (length <= shortest[:, None] + 1e-3)  # every action as short as the best
    cls = torch.zeros(P, num_classes)
    onehot = torch.nn.functional.one_hot(labels, num_classes).float()  # (N, K)
    cls = (ties.float() @ onehot).clamp(max=1.0)
    idx = torch.arange(P)
    reg = torch.stack([left[idx, best], right[idx, best]], dim=1) / s
    reg = reg * positive[:, None]
    return Targets(cls, reg, positive)
