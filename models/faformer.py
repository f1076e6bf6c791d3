"""FAFormer head: a frame branch and an action branch coupled through cross-attention.

After FAFormer (frame–action transformers for temporal action segmentation): the frame
branch is ASFormer-style — each layer a dilated temporal convolution, then attention over a
dilated local neighbourhood (dilation doubling layer by layer), then a feed-forward — and the
action branch is a set of learned action tokens. Blocks couple them:

* **i** (input): projects the frame features, runs the first frame layer, initialises the
  action tokens by cross-attending to the frames, and couples back (frames attend to tokens);
* **u** (update): frame layer, tokens ← frames cross-attention, token self-attention and
  feed-forward, frames ← tokens cross-attention, frame feed-forward;
* **U** (update at segment level): the frames are down-sampled by `segment_frames` (average
  over each segment), the same update runs over the segments (so attention spans a wider
  stretch), and the change is up-sampled back onto the frames.

The block sequence is configured (`blocks: [i, u, U, u, U]`; it starts with one `i`).

Outputs: per-frame class logits from the frame branch (sigmoid per class, so the
overlapping actions of several actors can both be on), and per token a class (K classes +
"no action") and a mask over the window's frames — what the action-token losses supervise
(`models/seg_losses.py`). The detector turns the per-frame labels into segments
(`frame_segments`), which become the same onset/offset events as ActionFormer's.

What differs: windows are the live stream's last T features, masks use the dtype's most
negative finite value, and everything is plain tensor ops that export to ONNX / TensorRT.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True, kw_only=True)
class FAFormerConfig:
    """Attributes:
    type: "faformer" (selects this head; `head: faformer` in a config is short for the
        defaults).
    window_frames: T, feature steps the head sees (a multiple of segment_frames).
    stride_frames: S, the head runs every S frames of a stream.
    dim: width of both branches.
    num_tokens: M, learned action tokens.
    num_heads: attention heads.
    blocks: the block sequence, "i" first, then any of "u" and "U".
    attn_radius: each frame attends to frames at i + k * dilation for |k| <= attn_radius.
    segment_frames: the down-sampling factor of "U" blocks.
    mlp_ratio: feed-forward width as a multiple of dim.
    dropout: in attention outputs and feed-forward (training only).
    decide: what labels a frame: "frames", the frame branch alone; "tokens", as FACT does,
        mostly the action tokens — per class, the strongest token's class probability times
        how much its mask covers the frame (a max over tokens, so the overlapping actions of
        several actors can both be on), blended with the frame branch (`token_share`).
    token_share: the tokens' share of the blend (FACT: 0.9).
    (How frame probabilities become segments is the detector's decode setting:
    `decode.frame_threshold`, `decode.frame_threshold_off`.)
    """

    type: Literal["faformer"] = "faformer"
    window_frames: int = 128
    stride_frames: int = 2
    dim: int = 96
    num_tokens: int = 8
    num_heads: int = 4
    blocks: tuple[str, ...] = ("i", "u", "U", "u", "U")
    attn_radius: int = 2
    segment_frames: int = 4
    mlp_ratio: float = 2.0
    dropout: float = 0.0
    decide: Literal["frames", "tokens"] = "frames"
    token_share: float = 0.9

    def __post_init__(self) -> None:
        if not 0.0 <= self.token_share <= 1.0:
            raise ValueError(f"token_share must be in [0, 1], got {self.token_share}")
        if not self.blocks or self.blocks[0] != "i" or set(self.blocks[1:]) - {"u", "U"}:
            raise ValueError(f"blocks must be 'i' followed by 'u' / 'U', got {list(self.blocks)}")
        if self.window_frames % self.segment_frames:
            raise ValueError(
                f"window_frames {self.window_frames} must be a multiple of segment_frames "
                f"{self.segment_frames}"
            )
        if self.dim % self.num_heads:
            raise ValueError(f"dim {self.dim} is not divisible by num_heads {self.num_heads}")
        if self.stride_frames < 1 or self.num_tokens < 1 or self.attn_radius < 1:
            raise ValueError("stride_frames, num_tokens and attn_radius must be >= 1")


class FrameLabels(NamedTuple):
    """frame_logits: (B, T, K) the decided labels per frame and class (sigmoid; what is
    exported and decoded); token_logits: (B, M, K + 1), the last class "no action";
    token_masks: (B, M, T) logits; valid: (B, T) bool; frame_branch: (B, T, K) the frame
    branch's own logits, which its losses supervise (None: the same as frame_logits)."""

    frame_logits: torch.Tensor
    token_logits: torch.Tensor
    token_masks: torch.Tensor
    valid: torch.Tensor
    frame_branch: torch.Tensor | None = None

    @property
    def branch_logits(self) -> torch.Tensor:
        return self.frame_logits if self.frame_branch is None else self.frame_branch


def token_decided(
    frame_logits: torch.Tensor, token_logits: torch.Tensor, masks: torch.Tensor, share: float
) -> torch.Tensor:
    """FACT's labels as logits (B, T, K): per class, max over tokens of the token's class
    probability (softmax, "no action" left out) × its mask's coverage of the frame (sigmoid),
    blended `share` : 1 − share with the frame branch's probabilities."""
    k = frame_logits.shape[-1]
    classes = token_logits.softmax(-1)[..., :k]  # (B, M, K)
    cover = masks.sigmoid()  # (B, M, T)
    tokens = (cover.unsqueeze(-1) * classes.unsqueeze(2)).amax(1)  # (B, T, K)
    p = (share * tokens + (1.0 - share) * frame_logits.sigmoid()).clamp(1e-6, 1.0 - 1e-6)
    return torch.log(p) - torch.log1p(-p)  # logit, in ops every exporter has


class Attention(nn.Module):
    """Multi-head attention of queries x over a context, with an optional mask (True = may
    attend): per key (B, Tk) or per query and key (B, Tq, Tk)."""

    def __init__(self, *, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.q, self.kv, self.out = (
            nn.Linear(dim, dim),
            nn.Linear(dim, 2 * dim),
            nn.Linear(dim, dim),
        )
        self.drop = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, ctx: torch.Tensor, allowed: torch.Tensor | None
    ) -> torch.Tensor:
        """Args: x (B, Tq, C); ctx (B, Tk, C); allowed (B, Tk) or (B, Tq, Tk) bool or None.
        Returns (B, Tq, C)."""
        B, Tq, C = x.shape
        q = self.q(x).view(B, Tq, self.heads, self.head_dim).transpose(1, 2)
        k, v = (
            t.view(B, -1, self.heads, self.head_dim).transpose(1, 2)
            for t in self.kv(ctx).chunk(2, -1)
        )
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)  # (B, H, Tq, Tk)
        if allowed is not None:
            mask = allowed[:, None] if allowed.dim() == 3 else allowed[:, None, None]
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, Tq, C)
        return self.drop(self.out(out))


def mlp(*, dim: int, ratio: float, dropout: float) -> nn.Sequential:
    """(..., C) → (..., C): Linear → GELU → Linear → Dropout, hidden width dim * ratio."""
    hidden = int(dim * ratio)
    return nn.Sequential(
        nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim), nn.Dropout(dropout)
    )


class FrameLayer(nn.Module):
    """ASFormer-style frame layer: dilated conv feed-forward, attention over the frames at
    i + k * dilation for |k| <= radius, MLP."""

    def __init__(
        self,
        *,
        dim: int,
        heads: int,
        dilation: int,
        radius: int,
        mlp_ratio: float,
        dropout: float,
    ) -> None:
        super().__init__()
        self.dilation, self.radius = dilation, radius
        self.conv = nn.Conv1d(dim, dim, 3, padding=dilation, dilation=dilation)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim=dim, heads=heads, dropout=dropout)
        self.mlp = mlp(dim=dim, ratio=mlp_ratio, dropout=dropout)

    def forward(self, f: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Args: f (B, T, C) frame features; valid (B, T) bool. Returns (B, T, C)."""
        T = f.shape[1]
        keep = valid[..., None].to(f.dtype)
        f = f + F.gelu(self.conv((f * keep).transpose(1, 2))).transpose(1, 2)
        pos = torch.arange(T, device=f.device)
        off = pos[None, :] - pos[:, None]
        band = (off % self.dilation == 0) & (off.abs() <= self.radius * self.dilation)
        allowed = band[None] & valid[:, None, :]
        h = self.norm1(f)
        f = f + self.attn(h, h, allowed)
        return f + self.mlp(self.norm2(f))


class Coupling(nn.Module):
    """Frames ↔ action tokens: tokens ← frames, token self-attention and MLP, frames ← tokens,
    frame MLP."""

    def __init__(self, *, dim: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        attn = dict(dim=dim, heads=heads, dropout=dropout)
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(6))
        self.tok_from_frames = Attention(**attn)
        self.tok_self = Attention(**attn)
        self.tok_mlp = mlp(dim=dim, ratio=mlp_ratio, dropout=dropout)
        self.frames_from_tok = Attention(**attn)
        self.frame_mlp = mlp(dim=dim, ratio=mlp_ratio, dropout=dropout)

    def forward(
        self,
        f: torch.Tensor,
        a: torch.Tensor,
        valid: torch.Tensor,
        *,
        tokens_only_cross: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Args: f (B, T, C) frames; a (B, M, C) action tokens; valid (B, T) bool;
        tokens_only_cross: the tokens only read the frames (block i: no token self-attention
        or MLP yet). Returns the updated f (B, T, C) and a (B, M, C)."""
        n = self.norms
        a = a + self.tok_from_frames(n[0](a), n[1](f), valid)
        if not tokens_only_cross:
            a = a + self.tok_self(n[2](a), n[2](a), None)
            a = a + self.tok_mlp(n[3](a))
        f = f + self.frames_from_tok(n[4](f), a, None)
        return f + self.frame_mlp(n[5](f)), a


class Block(nn.Module):
    """One of i / u / U (module docstring)."""

    def __init__(
        self,
        *,
        kind: str,
        dim: int,
        heads: int,
        dilation: int,
        radius: int,
        segment_frames: int,
        mlp_ratio: float,
        dropout: float,
    ) -> None:
        super().__init__()
        if kind not in ("i", "u", "U"):
            raise ValueError(f"block kind must be i, u or U, got {kind!r}")
        self.kind, self.segment = kind, segment_frames
        common = dict(dim=dim, heads=heads, mlp_ratio=mlp_ratio, dropout=dropout)
        self.frame = FrameLayer(dilation=dilation, radius=radius, **common)
        self.couple = Coupling(**common)

    def forward(
        self, f: torch.Tensor, a: torch.Tensor, valid: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Args: f (B, T, C) frames, T a multiple of segment_frames; a (B, M, C) tokens;
        valid (B, T) bool. Returns f (B, T, C) and a (B, M, C)."""
        if self.kind == "U":
            B, T, C = f.shape
            s = self.segment
            keep = valid.view(B, T // s, s, 1).to(f.dtype)
            seg = (f.view(B, T // s, s, C) * keep).sum(2) / keep.sum(2).clamp(
                min=1.0
            )  # (B, T/s, C)
            seg_valid = valid.view(B, T // s, s).any(2)
            new, a = self.couple(self.frame(seg, seg_valid), a, seg_valid)
            return f + (new - seg).repeat_interleave(s, dim=1), a
        f = self.frame(f, valid)
        return self.couple(f, a, valid, tokens_only_cross=self.kind == "i")


class FAFormerHead(nn.Module):
    """(B, T, C_in) window + valid (B, T) → `FrameLabels`."""

    def __init__(self, config: FAFormerConfig, *, in_dim: int, num_classes: int) -> None:
        super().__init__()
        self.config, self.num_classes = config, num_classes
        self.window_frames, self.stride_frames = config.window_frames, config.stride_frames
        d = config.dim
        self.in_proj = nn.Linear(in_dim, d)
        self.tokens = nn.Parameter(torch.randn(config.num_tokens, d) * 0.02)
        self.blocks = nn.ModuleList(
            Block(
                kind=kind,
                dim=d,
                heads=config.num_heads,
                dilation=2 ** (i % 6),
                radius=config.attn_radius,
                segment_frames=config.segment_frames,
                mlp_ratio=config.mlp_ratio,
                dropout=config.dropout,
            )
            for i, kind in enumerate(config.blocks)
        )
        self.frame_norm, self.token_norm = nn.LayerNorm(d), nn.LayerNorm(d)
        self.frame_cls = nn.Linear(d, num_classes)
        nn.init.constant_(self.frame_cls.bias, -math.log((1 - 0.01) / 0.01))
        self.token_cls = nn.Linear(d, num_classes + 1)
        self.mask_frame, self.mask_token = nn.Linear(d, d), nn.Linear(d, d)

    def forward(self, window: torch.Tensor, valid: torch.Tensor) -> FrameLabels:
        """Args: window (B, T, C_in); valid (B, T) bool. Returns `FrameLabels`."""
        B = window.shape[0]
        f = self.in_proj(window)
        a = self.tokens.expand(B, -1, -1)
        for block in self.blocks:
            f, a = block(f, a, valid)
        f, a = self.frame_norm(f), self.token_norm(a)
        masks = self.mask_token(a) @ self.mask_frame(f).transpose(1, 2) / math.sqrt(f.shape[-1])
        frames, tokens = self.frame_cls(f), self.token_cls(a)
        if self.config.decide == "frames":
            return FrameLabels(frames, tokens, masks, valid)
        decided = token_decided(frames, tokens, masks, self.config.token_share)
        return FrameLabels(decided, tokens, masks, valid, frames)
