"""FAFormer's training losses.

* per-frame classification: sigmoid focal loss over the window's valid frames (multi-hot
  targets: overlapping actions of several actors are all on), normalised by the frames
  showing an action;
* temporal smoothing: the truncated MSE between neighbouring frames' log-probabilities
  (τ = 4, as in MS-TCN / ASFormer), which penalises flicker without forbidding real edges;
* action tokens: each ground-truth segment of the window is matched one-to-one to a token by
  the Hungarian algorithm on (class probability + mask cost); matched tokens learn the class
  (cross-entropy) and the segment's frames (binary cross-entropy + Dice on the mask);
  unmatched tokens learn "no action".
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from models.faformer import FrameLabels
from models.intervals import hungarian
from models.losses import sigmoid_focal_loss


def smoothing_loss(logits: torch.Tensor, valid: torch.Tensor, tau: float = 4.0) -> torch.Tensor:
    """Truncated MSE of neighbouring frames' log-probabilities (both classes of each sigmoid)."""
    logp = torch.stack([F.logsigmoid(logits), F.logsigmoid(-logits)], dim=-1)
    diff = (logp[:, 1:] - logp[:, :-1].detach()) ** 2
    pair = valid[:, 1:] & valid[:, :-1]
    if not pair.any():
        return logits.sum() * 0.0
    return diff.clamp(max=tau**2)[pair].mean()


def token_losses(out: FrameLabels, segments: list[torch.Tensor]) -> torch.Tensor:
    """Hungarian-matched action-token losses (class CE + mask BCE + Dice), batch mean."""
    B, M, K1 = out.token_logits.shape
    T = out.token_masks.shape[-1]
    no_action = K1 - 1
    total = out.token_logits.sum() * 0.0
    frames = torch.arange(T, device=out.token_masks.device) + 0.5
    for b in range(B):
        target = torch.full((M,), no_action, dtype=torch.long, device=out.token_logits.device)
        segs = segments[b].to(out.token_masks.device)
        logits, masks, valid = out.token_logits[b], out.token_masks[b], out.valid[b]
        if len(segs):
            gt = ((frames[None] >= segs[:, :1]) & (frames[None] < segs[:, 1:2])).float()  # (N, T)
            with torch.no_grad():
                prob = logits.softmax(-1)[:, segs[:, 2].long()]  # (M, N)
                m = masks.sigmoid()[:, valid]
                g = gt[:, valid]
                dice = 1 - (2 * m @ g.T + 1) / (m.sum(1, keepdim=True) + g.sum(1)[None] + 1)
                cost = (dice - prob).cpu().numpy()
            pairs = hungarian(cost)
            rows = torch.tensor([r for r, _ in pairs])
            cols = torch.tensor([c for _, c in pairs])
            target[rows] = segs[cols, 2].long()
            pm, pg = masks[rows][:, valid], gt[cols][:, valid]
            bce = F.binary_cross_entropy_with_logits(pm, pg)
            sm = pm.sigmoid()
            dice_loss = 1 - (2 * (sm * pg).sum(1) + 1) / (sm.sum(1) + pg.sum(1) + 1)
            total = total + bce + dice_loss.mean()
        weight = torch.ones(K1, device=logits.device)
        weight[no_action] = 0.1  # most tokens are unmatched in any window
        total = total + F.cross_entropy(logits, target, weight=weight)
    return total / B


def faformer_losses(
    out: FrameLabels,
    frame_labels: torch.Tensor,
    segments: list[torch.Tensor],
    *,
    smooth_weight: float,
    token_weight: float,
) -> dict[str, torch.Tensor]:
    valid = out.valid
    num_on = frame_labels[valid].sum().clamp(min=1.0)
    seg = sigmoid_focal_loss(out.branch_logits[valid], frame_labels[valid]) / num_on
    smooth = smoothing_loss(out.branch_logits, valid)
    token = token_losses(out, segments)
    total = seg + smooth_weight * smooth + token_weight * token
    return {"total": total, "seg": seg, "smooth": smooth, "token": token}
