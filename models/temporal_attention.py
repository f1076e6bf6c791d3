"""FastBack's attention: lookback heads over a band of past frames, lookahead heads over the
future (bounded or the whole clip), relative-position biases per head, and the CLS-frame
masks of clip models; over whole sequences (`forward`, frames of one or several tokens) and
one query per stream over its cached window (`attend_window`, the streaming path of
`models.fastback`)."""

from __future__ import annotations

import math

import torch
from torch import nn


class BidirectionalTemporalAttention(nn.Module):
    """Multi-head attention with lookback heads (past window) and lookahead heads (future).

    Lookback head h at time i attends to j in [i - L + 1, i]; lookahead heads to j in
    [i, i + A] (A: this layer's lookahead; None: every j >= i). Each head adds a learned bias
    per relative offset (an unbounded lookahead shares one bias for offsets of L - 1 and
    more). Masked scores are set to the dtype's most negative finite value, so a fully
    masked row gives finite (unused) outputs instead of NaN.
    """

    def __init__(
        self,
        *,
        dim: int,
        num_lookback_heads: int,
        num_lookahead_heads: int,
        lookback_frames: int,
        lookahead_frames: int | None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.hb, self.ha = num_lookback_heads, num_lookahead_heads
        self.heads = self.hb + self.ha
        self.head_dim = dim // self.heads
        self.lookback, self.lookahead = lookback_frames, lookahead_frames
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)
        # bias_back[h, d]: offset d = i - j in [0, L); bias_ahead[h, d]: d = j - i in [0, A]
        # (unbounded: [0, L), the last entry for every offset from L - 1 on).
        self.ahead_span = lookback_frames if lookahead_frames is None else lookahead_frames + 1
        self.bias_back = nn.Parameter(torch.zeros(self.hb, lookback_frames))
        self.bias_ahead = nn.Parameter(torch.zeros(max(self.ha, 0), self.ahead_span))

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(..., C) → q, k, v each (..., H, D)."""
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        shape = (*x.shape[:-1], self.heads, self.head_dim)
        return q.view(shape), k.view(shape), v.view(shape)

    def forward(
        self,
        x: torch.Tensor,
        valid: torch.Tensor | None = None,
        *,
        end_cls: bool = False,
        frames: torch.Tensor | None = None,
        global_tokens: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Args: x (B, N, C) tokens; valid (B, N) bool, True = a real token; frames (N,) the
        frame index of each token (None: token i is frame i), the bands and biases being
        over frame offsets, so tokens of one frame see each other; end_cls: the tokens of the
        last frame are an end CLS frame that attends to every token and that no other token
        sees; global_tokens (N,) bool: tokens that attend to every token and that every
        token attends to, with no relative-position bias (FastBack's global CLS frames).
        Returns (B, N, C)."""
        B, N, C = x.shape
        q, k, v = (t.transpose(1, 2) for t in self.project(x))  # (B, H, N, D)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)  # (B, H, N, N)
        pos = torch.arange(N, device=x.device) if frames is None else frames
        off = pos[:, None] - pos[None, :]  # (N, N): frame of i - frame of j
        allowed_b = (off >= 0) & (off < self.lookback)
        if end_cls:
            cls_row = pos == pos[-1]
            allowed_b = (allowed_b | (cls_row[:, None] & (off >= 0))) & ~(
                cls_row[None, :] & ~cls_row[:, None]
            )
        bias_b = self.bias_back[:, off.clamp(0, self.lookback - 1)]  # (Hb, N, N)
        allowed = allowed_b.expand(self.hb, N, N)
        bias = bias_b
        if self.ha:
            allowed_a = off <= 0
            if self.lookahead is not None:
                allowed_a = allowed_a & (off >= -self.lookahead)
            if end_cls:
                allowed_a = allowed_a & ~(cls_row[None, :] & ~cls_row[:, None])
            bias_a = self.bias_ahead[:, (-off).clamp(0, self.ahead_span - 1)]  # (Ha, N, N)
            allowed = torch.cat([allowed, allowed_a.expand(self.ha, N, N)], dim=0)
            bias = torch.cat([bias_b, bias_a], dim=0)
        if end_cls:  # the end CLS frame's view is global: no relative-position bias
            bias = bias.masked_fill(cls_row[None, :, None], 0.0)
        if global_tokens is not None:
            either = global_tokens[:, None] | global_tokens[None, :]  # (N, N)
            allowed = allowed | either
            bias = bias.masked_fill(either, 0.0)
        allowed = allowed.unsqueeze(0)  # (1, H, N, N)
        if valid is not None:
            allowed = allowed & valid[:, None, None, :]
        scores = (scores + bias).masked_fill(~allowed, torch.finfo(scores.dtype).min)
        out = scores.softmax(dim=-1) @ v  # (B, H, N, D)
        return self.drop(self.proj(out.transpose(1, 2).reshape(B, N, C)))

    def attend_window(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_valid: torch.Tensor
    ) -> torch.Tensor:
        """Attention of one query per stream over its cached window (the streaming path).

        Args: q (B, H, D); k, v (B, H, W, D) oldest first, W = L + A, the query's own frame at
        index L - 1; key_valid (B, W). Returns (B, C).
        """
        B = q.shape[0]
        L, A = self.lookback, self.lookahead
        scores = (k @ q.unsqueeze(-1)).squeeze(-1) / math.sqrt(self.head_dim)  # (B, H, W)
        neg = torch.finfo(scores.dtype).min
        s_b = scores[:, : self.hb, :L] + self.bias_back.flip(-1)  # slot j ↔ offset L - 1 - j
        s_b = s_b.masked_fill(~key_valid[:, None, :L], neg)
        out = s_b.softmax(-1).unsqueeze(-2) @ v[:, : self.hb, :L]  # (B, Hb, 1, D)
        if self.ha:
            s_a = scores[:, self.hb :, L - 1 :] + self.bias_ahead  # slot L-1+d ↔ offset d
            s_a = s_a.masked_fill(~key_valid[:, None, L - 1 :], neg)
            out_a = s_a.softmax(-1).unsqueeze(-2) @ v[:, self.hb :, L - 1 : L + A]
            out = torch.cat([out, out_a], dim=1)
        return self.proj(out.reshape(B, -1))
