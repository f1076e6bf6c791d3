"""Losses of the ActionFormer head: sigmoid focal loss and 1-D DIoU loss, normalised by the
number of positive points."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from models.actionformer import HeadOutput
from models.targets import Targets


def sigmoid_focal_loss(
    logits: torch.Tensor, targets: torch.Tensor, *, alpha: float = 0.25, gamma: float = 2.0
) -> torch.Tensor:
    """Element-wise focal loss (Lin et al.), summed."""
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss.sum()


def diou_loss_1d(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """1 - IoU + (centre distance / enclosing length)² for (M, 2) distances (left, right) from
    the same point; summed."""
    pl, pr = pred[:, 0], pred[:, 1]
    tl, tr = target[:, 0], target[:, 1]
    inter = torch.minimum(pl, tl) + torch.minimum(pr, tr)
    union = pl + pr + tl + tr - inter
    iou = inter / union.clamp(min=eps)
    enclosing = torch.maximum(pl, tl) + torch.maximum(pr, tr)
    centre_gap = (pr - pl) / 2 - (tr - tl) / 2
    return (1 - iou + (centre_gap / enclosing.clamp(min=eps)) ** 2).sum()


def compute_losses(
    out: HeadOutput, targets: Targets, *, reg_weight: float = 1.0
) -> dict[str, torch.Tensor]:
    """Args: head output for B windows; targets with a leading batch dim (B, P, ...).
    Returns {"cls", "reg", "total"} (scalars)."""
    valid = out.valid
    num_pos = targets.positive.sum().clamp(min=1).float()
    cls = sigmoid_focal_loss(out.cls_logits[valid], targets.cls[valid]) / num_pos
    pos = targets.positive & valid
    if pos.any():
        reg = diou_loss_1d(out.offsets[pos], targets.reg[pos]) / num_pos
    else:
        reg = out.offsets.sum() * 0.0
    return {"cls": cls, "reg": reg, "total": cls + reg_weight * reg}
