"""ActionFormer head: a multi-scale local-attention transformer over a window of features.

After ActionFormer (Zhang, Wu, Li, ECCV 2022): every time step at every pyramid level
classifies itself (sigmoid per class) and regresses its distances to the action's start and
end. Blocks are pre-norm; query, key and value pass through depthwise convolutions (which
also down-sample by 2 between levels, with a max-pooled skip path) before local windowed
attention; classification and regression heads are shared across levels.

What differs: the input is the window of the last T frame features of a live stream (not a
whole pre-extracted video), so T is fixed and small, and the model is smaller by default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True, kw_only=True)
class HeadConfig:
    """Attributes:
    type: "actionformer" (selects this head; FAFormer's config says "faformer").
    window_frames: T, feature steps the head sees (a multiple of 2 ** (num_levels - 1)).
    stride_frames: S, the head runs every S frames of a stream.
    dim: width of the transformer and heads.
    num_levels: P, pyramid levels with strides 1, 2, 4, ...
    num_heads: attention heads.
    attn_window: local attention window (odd): each step sees attn_window // 2 on each side.
    mlp_ratio: feed-forward width as a multiple of dim.
    head_layers: conv layers in the classification and regression heads (last one included).
    prior_prob: initial probability of every class (sets the classifier's bias).
    """

    type: Literal["actionformer"] = "actionformer"
    window_frames: int = 128
    stride_frames: int = 2
    dim: int = 128
    num_levels: int = 4
    num_heads: int = 4
    attn_window: int = 9
    mlp_ratio: float = 2.0
    head_layers: int = 3
    prior_prob: float = 0.01

    def __post_init__(self) -> None:
        step = 2 ** (self.num_levels - 1)
        if self.num_levels < 1 or self.window_frames % step:
            raise ValueError(
                f"window_frames {self.window_frames} must be a multiple of 2 ** (num_levels - 1)"
                f" = {step}"
            )
        if self.attn_window < 1 or self.attn_window % 2 == 0:
            raise ValueError(f"attn_window must be odd and positive, got {self.attn_window}")
        if self.dim % self.num_heads:
            raise ValueError(f"dim {self.dim} is not divisible by num_heads {self.num_heads}")
        if self.stride_frames < 1:
            raise ValueError(f"stride_frames must be >= 1, got {self.stride_frames}")
        if not 0 < self.prior_prob < 1:
            raise ValueError(f"prior_prob must be in (0, 1), got {self.prior_prob}")

    @property
    def strides(self) -> tuple[int, ...]:
        return tuple(2**level for level in range(self.num_levels))


class HeadOutput(NamedTuple):
    """N = sum over levels of T / stride points.

    cls_logits: (B, N, K) per point and class.
    offsets: (B, N, 2) distances to (start, end), in units of the point's level stride.
    valid: (B, N) bool, False where the point lies on padding.
    """

    cls_logits: torch.Tensor
    offsets: torch.Tensor
    valid: torch.Tensor


def make_points(window_frames: int, strides: tuple[int, ...]) -> torch.Tensor:
    """(N, 2) float: each point's position on the frame grid and its level's stride."""
    pts = [
        torch.stack(
            [
                torch.arange(0, window_frames, s, dtype=torch.float32),
                torch.full((window_frames // s,), float(s)),
            ],
            dim=1,
        )
        for s in strides
    ]
    return torch.cat(pts, dim=0)


class ChannelNorm(nn.Module):
    """LayerNorm over channels of a (B, C, T) tensor."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.transpose(1, 2)).transpose(1, 2)


def downsample_mask(valid: torch.Tensor, stride: int) -> torch.Tensor:
    """(B, T) → (B, T / stride), nearest."""
    return valid[:, ::stride] if stride > 1 else valid


def point_valid(valid: torch.Tensor, strides: tuple[int, ...]) -> torch.Tensor:
    """(B, T) frame mask → (B, N) mask of the pyramid's points (`HeadOutput.valid`): a point
    is valid where the frame at its position is (every level down-samples by striding)."""
    return torch.cat([downsample_mask(valid, s) for s in strides], dim=1)


class MaxPoolSkip(nn.Module):
    """Max-pool over time, kernel 3, stride 2, on (B, C, T), computed as a 2-D pool over
    (B, C, 1, T): TensorRT's ONNX parser supports 2-D and 3-D pooling only."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(x.unsqueeze(2), (1, 3), stride=(1, 2), padding=(0, 1)).squeeze(2)


class LocalConvAttention(nn.Module):
    """Multi-head attention within a local window, with depthwise-conv q/k/v projections.

    (B, C, T) → (B, C, T / stride).
    """

    def __init__(self, *, dim: int, num_heads: int, window: int, stride: int) -> None:
        super().__init__()
        self.num_heads, self.window, self.stride = num_heads, window, stride
        self.head_dim = dim // num_heads

        def dw() -> nn.Conv1d:
            return nn.Conv1d(dim, dim, 3, stride=stride, padding=1, groups=dim, bias=False)

        self.q_conv, self.k_conv, self.v_conv = dw(), dw(), dw()
        self.q_norm, self.k_norm, self.v_norm = ChannelNorm(dim), ChannelNorm(dim), ChannelNorm(dim)
        self.q_proj = nn.Conv1d(dim, dim, 1)
        self.k_proj = nn.Conv1d(dim, dim, 1)
        self.v_proj = nn.Conv1d(dim, dim, 1)
        self.out = nn.Conv1d(dim, dim, 1)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Args: x (B, C, T); valid (B, T). Returns (B, C, T'), valid (B, T')."""
        B, C, _ = x.shape
        valid_out = downsample_mask(valid, self.stride)
        m = valid_out[:, None, :].to(x.dtype)
        q = self.q_proj(self.q_norm(self.q_conv(x) * m))
        k = self.k_proj(self.k_norm(self.k_conv(x) * m))
        v = self.v_proj(self.v_norm(self.v_conv(x) * m))
        T = q.shape[-1]
        H, D = self.num_heads, self.head_dim
        q, k, v = (t.view(B, H, D, T) for t in (q, k, v))
        radius = self.window // 2
        if T <= MASKED_MAX_STEPS or 2 * radius + 1 >= T:
            out = masked_attention(q, k, v, valid_out, radius)
        else:
            out = banded_attention(q, k, v, valid_out, radius)
        return self.out(out.reshape(B, C, T)) * m, valid_out


# Up to this many steps the whole (T, T) score matrix is cheaper than the band's shifted
# products (measured by `python -m benchmarks.head_attention`); both give the same output.
MASKED_MAX_STEPS = 128


def masked_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, valid: torch.Tensor, radius: int
) -> torch.Tensor:
    """Attention of every step to the valid steps within `radius` of it, through the full
    (T, T) score matrix masked to the band: cost and memory quadratic in T.

    Args: q, k, v (B, H, D, T); valid (B, T) bool. Returns (B, H, D, T)."""
    T, D = q.shape[-1], q.shape[-2]
    scores = (q.transpose(2, 3) @ k) / math.sqrt(D)  # (B, H, T, T)
    pos = torch.arange(T, device=q.device)
    near = (pos[:, None] - pos[None, :]).abs() <= radius
    allowed = near[None, None] & valid[:, None, None, :]
    scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
    return (scores.softmax(-1) @ v.transpose(2, 3)).transpose(2, 3)


def banded_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, valid: torch.Tensor, radius: int
) -> torch.Tensor:
    """The same attention as `masked_attention`, computed on the band only: one product per
    offset -radius .. radius against the keys shifted by it, so cost and memory are linear in
    T. Keys past either end are invalid, as they are outside the masked matrix.

    Args: q, k, v (B, H, D, T); valid (B, T) bool. Returns (B, H, D, T)."""
    T, D = q.shape[-1], q.shape[-2]
    width = 2 * radius + 1
    kp = F.pad(k, (radius, radius))
    vp = F.pad(v, (radius, radius))
    vm = F.pad(valid, (radius, radius), value=False)
    scores = torch.stack(
        [(q * kp[..., j : j + T]).sum(2) for j in range(width)], dim=-1
    ) / math.sqrt(D)  # (B, H, T, width)
    allowed = vm.unfold(1, width, 1)[:, None]  # (B, 1, T, width): key t - radius + j valid
    weights = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min).softmax(-1)
    out = weights[..., 0].unsqueeze(2) * vp[..., 0:T]
    for j in range(1, width):
        out = out + weights[..., j].unsqueeze(2) * vp[..., j : j + T]
    return out


class LocalTransformerBlock(nn.Module):
    """Pre-norm transformer block on (B, C, T); stride 2 halves T (max-pooled skip path)."""

    def __init__(
        self, *, dim: int, num_heads: int, window: int, stride: int, mlp_ratio: float
    ) -> None:
        super().__init__()
        self.norm1 = ChannelNorm(dim)
        self.attn = LocalConvAttention(dim=dim, num_heads=num_heads, window=window, stride=stride)
        self.skip = MaxPoolSkip() if stride > 1 else nn.Identity()
        self.norm2 = ChannelNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Conv1d(dim, hidden, 1), nn.GELU(), nn.Conv1d(hidden, dim, 1))

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Every conv reads zeros at padding (LayerNorm of a zero vector is its bias, not 0).
        a, valid_out = self.attn(self.norm1(x) * valid[:, None, :].to(x.dtype), valid)
        m = valid_out[:, None, :].to(x.dtype)
        x = self.skip(x) * m + a
        x = x + self.mlp(self.norm2(x)) * m
        return x, valid_out


class PredictionHead(nn.Module):
    """(conv k3 → LN → ReLU) × (layers - 1) → conv k3 to `out_dim`, shared across levels."""

    def __init__(self, *, dim: int, out_dim: int, layers: int) -> None:
        super().__init__()
        self.body = nn.ModuleList(
            nn.Sequential(
                nn.Conv1d(dim, dim, 3, padding=1, bias=False), ChannelNorm(dim), nn.ReLU()
            )
            for _ in range(layers - 1)
        )
        self.final = nn.Conv1d(dim, out_dim, 3, padding=1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Args: x (B, C, T); mask (B, 1, T) float, 0 on padding. Returns (B, out_dim, T)."""
        for layer in self.body:
            x = layer(x) * mask
        return self.final(x)


class ActionFormerHead(nn.Module):
    """(B, T, C_in) window of features → `HeadOutput` over all pyramid levels."""

    def __init__(self, config: HeadConfig, *, in_dim: int, num_classes: int) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.config = config
        self.num_classes = num_classes
        d = config.dim
        self.embed = nn.Sequential(
            nn.Conv1d(in_dim, d, 3, padding=1, bias=False), ChannelNorm(d), nn.ReLU()
        )
        block = dict(
            dim=d, num_heads=config.num_heads, window=config.attn_window, mlp_ratio=config.mlp_ratio
        )
        self.stem = LocalTransformerBlock(stride=1, **block)
        self.branch = nn.ModuleList(
            LocalTransformerBlock(stride=2, **block) for _ in range(config.num_levels - 1)
        )
        self.level_norms = nn.ModuleList(ChannelNorm(d) for _ in range(config.num_levels))
        self.cls_head = PredictionHead(dim=d, out_dim=num_classes, layers=config.head_layers)
        self.reg_head = PredictionHead(dim=d, out_dim=2, layers=config.head_layers)
        self.reg_scales = nn.Parameter(torch.ones(config.num_levels))
        nn.init.constant_(
            self.cls_head.final.bias, -math.log((1 - config.prior_prob) / config.prior_prob)
        )
        self.register_buffer(
            "points", make_points(config.window_frames, config.strides), persistent=False
        )

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> HeadOutput:
        """Args: x (B, T, C_in); valid (B, T) bool (True = real). T is `window_frames` when
        streaming; every layer is local, so offline evaluation may pass a whole video (T a
        multiple of the coarsest stride; its points are `make_points(T, config.strides)`)."""
        B, T, _ = x.shape
        coarsest = self.config.strides[-1]
        if T % coarsest:
            raise ValueError(f"head needs a multiple of {coarsest} steps, got {T}")
        if valid is None:
            valid = torch.ones(B, T, dtype=torch.bool, device=x.device)
        m = valid[:, None, :].to(x.dtype)
        h = self.embed(x.transpose(1, 2) * m) * m  # (B, C, T)
        h, v = self.stem(h, valid)
        levels, masks = [h], [v]
        for block in self.branch:
            h, v = block(h, v)
            levels.append(h)
            masks.append(v)
        cls, reg = [], []
        for i, (feat, m) in enumerate(zip(levels, masks, strict=True)):
            mask = m[:, None, :].to(feat.dtype)
            feat = self.level_norms[i](feat) * mask
            cls.append(self.cls_head(feat, mask).transpose(1, 2))  # (B, T_l, K)
            reg.append(F.relu(self.reg_head(feat, mask) * self.reg_scales[i]).transpose(1, 2))
        return HeadOutput(
            torch.cat(cls, 1), torch.cat(reg, 1), point_valid(valid, self.config.strides)
        )
