"""FastBack temporal encoder: transformer blocks with lookback and lookahead attention heads.

After FastBack (a video transformer whose attention heads are split into *lookback* heads,
which attend to a bounded window of past frames, and *lookahead* heads, which attend to a few
future frames). What differs here: positions are encoded by a learned bias per head and
relative offset (so the same weights serve any stream length), windows are bounded on both
sides, and every layer has a streaming entry point:

* `forward(x)` encodes a whole sequence (training, offline evaluation);
* `step(x_t, cache)` encodes one new frame per stream with a fixed-size cache of keys and
  values, so its cost does not grow with the stream's length.

With `lookahead_frames = A > 0` the encoder as a whole sees exactly A future frames: the A
frames are split over the layers (layer l looks `layer_lookahead(l)` frames ahead, earlier
layers first, the shares summing to A), so `step` returns the output for the frame exactly A
steps in the past (`delay_frames` = A); with A = 0 (the streaming default) the output is for
the frame just given.

The attention mask is built per block of heads: lookback heads see a band over the past,
lookahead heads one over the future (`lookahead_frames=None`: every later frame, a whole
clip's future as in FastBack itself, with no streaming step); an end CLS frame (`end_cls`,
clip recognition: `models/fastback_clip.py`) sees every frame and no frame sees it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn


@dataclass(frozen=True, kw_only=True)
class TemporalConfig:
    """Attributes:
    dim: model width C.
    num_layers: transformer blocks.
    num_lookback_heads: heads that attend to the past `lookback_frames` (current included).
    num_lookahead_heads: heads that attend to the next `lookahead_frames` (current included).
    lookback_frames: L, the lookback window, current frame included.
    lookahead_frames: A, future frames the encoder sees in total (0: fully causal); the
        stream's output is delayed by exactly A frames. None: lookahead heads see every
        later frame of the sequence (clip models; no streaming `step`).
    mlp_ratio: hidden size of the feed-forward network, as a multiple of dim.
    dropout: dropout in attention output and feed-forward (training only).
    """

    dim: int = 128
    num_layers: int = 2
    num_lookback_heads: int = 4
    num_lookahead_heads: int = 0
    lookback_frames: int = 32
    lookahead_frames: int | None = 0
    mlp_ratio: float = 2.0
    dropout: float = 0.0

    def __post_init__(self) -> None:
        heads = self.num_lookback_heads + self.num_lookahead_heads  # num_heads
        if self.num_lookback_heads < 1:
            raise ValueError(f"num_lookback_heads must be >= 1, got {self.num_lookback_heads}")
        if self.dim % heads:
            raise ValueError(f"dim {self.dim} is not divisible by {heads} heads")
        if self.lookback_frames < 1:
            raise ValueError(f"lookback_frames must be >= 1, got {self.lookback_frames}")
        bounded_ahead = self.lookahead_frames is None or self.lookahead_frames > 0
        if (self.num_lookahead_heads > 0) != bounded_ahead:
            raise ValueError(
                "num_lookahead_heads and lookahead_frames must both be 0 or both positive "
                f"(or None: unbounded), got {self.num_lookahead_heads} and "
                f"{self.lookahead_frames}"
            )

    @property
    def streams(self) -> bool:
        """Whether the encoder has a streaming `step` (its lookahead is bounded)."""
        return self.lookahead_frames is not None

    @property
    def delay_frames(self) -> int:
        """Frames by which a stream's output lags its input (the bounded lookahead)."""
        if self.lookahead_frames is None:
            raise ValueError("an unbounded lookahead (lookahead_frames None) has no streaming step")
        return self.lookahead_frames

    @property
    def num_heads(self) -> int:
        """H, heads per block: lookback and lookahead heads together."""
        return self.num_lookback_heads + self.num_lookahead_heads

    @property
    def head_dim(self) -> int:
        """D, width of one head."""
        return self.dim // self.num_heads

    @property
    def past_frames(self) -> int:
        """How far back the encoder's output for a frame reaches (its receptive field into the
        past): each layer adds lookback_frames - 1."""
        return self.num_layers * (self.lookback_frames - 1)

    def cache_shapes(self, batch_size: int | None) -> dict[str, tuple[int | None, ...]]:
        """The shape of each `FastBackCache` field for `batch_size` streams (None: the
        dynamic batch axis of an exported graph). W = lookback_frames + lookahead_frames,
        A = lookahead_frames, N = num_layers."""
        n, b, h, d = self.num_layers, batch_size, self.num_heads, self.head_dim
        w, a1 = self.lookback_frames + self.delay_frames, self.delay_frames + 1
        return {
            "keys": (n, b, h, w, d),
            "values": (n, b, h, w, d),
            "queries": (n, b, h, a1, d),
            "inputs": (n, b, a1, self.dim),
            "count": (b,),
        }

    def layer_lookahead(self, layer: int) -> int | None:
        """Future frames layer `layer` looks ahead: A split over the layers, earlier first
        (None: unbounded, every layer)."""
        if self.lookahead_frames is None:
            return None
        base, extra = divmod(self.lookahead_frames, self.num_layers)
        return base + (layer < extra)

    def layer_delay(self, layer: int) -> int:
        """Frames by which the input of layer `layer` lags the encoder's input."""
        return sum(self.layer_lookahead(m) for m in range(layer))


class FastBackCache(NamedTuple):
    """Streaming state of a `FastBackEncoder` for B streams.

    W = lookback_frames + lookahead_frames; A = lookahead_frames; N = num_layers.
    keys, values: (N, B, H, W, D) per-layer keys and values of the last W inputs (oldest first).
    queries: (N, B, H, A + 1, D) queries of inputs whose output still waits for the future.
    inputs: (N, B, A + 1, C) the same inputs, for the residual path.
    count: (B,) frames given to `step` so far.
    """

    keys: torch.Tensor
    values: torch.Tensor
    queries: torch.Tensor
    inputs: torch.Tensor
    count: torch.Tensor


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


class BTTransformer(nn.Module):
    """Pre-norm block: x + Attn(LN(x)), then + MLP(LN(x))."""

    def __init__(self, *, dim: int, mlp_ratio: float, dropout: float, **attn_kwargs) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = BidirectionalTemporalAttention(dim=dim, dropout=dropout, **attn_kwargs)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None, **mask) -> torch.Tensor:
        """(B, N, C) → (B, N, C); `mask`: `BidirectionalTemporalAttention.forward`'s keywords."""
        x = x + self.attn(self.norm1(x), valid, **mask)
        return x + self.mlp(self.norm2(x))

    def step(
        self,
        x_t: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        queries: torch.Tensor,
        inputs: torch.Tensor,
        num_valid: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One new input per stream.

        Args: x_t (B, C); keys, values (B, H, W, D); queries (B, H, A + 1, D);
        inputs (B, A + 1, C); num_valid (B,) real inputs given to this layer, x_t included.
        W = L + A, A being the encoder's total lookahead; this layer uses the newest
        L + a slots (a = its own lookahead).
        Returns the output (B, C) for the input a steps back, and the updated cache parts.
        """
        a = self.attn.lookahead
        q, k, v = self.attn.project(self.norm1(x_t))  # (B, H, D) each
        keys = torch.cat([keys[:, :, 1:], k.unsqueeze(2)], dim=2)
        values = torch.cat([values[:, :, 1:], v.unsqueeze(2)], dim=2)
        queries = torch.cat([queries[:, :, 1:], q.unsqueeze(2)], dim=2)
        inputs = torch.cat([inputs[:, 1:], x_t.unsqueeze(1)], dim=1)
        W = keys.shape[2]
        slots = torch.arange(W, device=x_t.device)
        key_valid = slots[None, :] >= (W - num_valid)[:, None]  # (B, W)
        used = slice(W - self.attn.lookback - a, W)
        y = inputs[:, -1 - a] + self.attn.attend_window(
            queries[:, :, -1 - a], keys[:, :, used], values[:, :, used], key_valid[:, used]
        )
        y = y + self.mlp(self.norm2(y))
        return y, keys, values, queries, inputs


class FastBackEncoder(nn.Module):
    """Input projection + `num_layers` BTTransformer blocks + final LayerNorm.

    forward: (B, T, C_in) → (B, T, C). step: (B, C_in) + cache → (B, C) + cache.
    """

    def __init__(self, config: TemporalConfig, *, in_dim: int) -> None:
        super().__init__()
        self.config = config
        self.in_proj = nn.Linear(in_dim, config.dim)
        self.blocks = nn.ModuleList(
            BTTransformer(
                dim=config.dim,
                mlp_ratio=config.mlp_ratio,
                dropout=config.dropout,
                num_lookback_heads=config.num_lookback_heads,
                num_lookahead_heads=config.num_lookahead_heads,
                lookback_frames=config.lookback_frames,
                lookahead_frames=config.layer_lookahead(layer),
            )
            for layer in range(config.num_layers)
        )
        self.norm = nn.LayerNorm(config.dim)

    @property
    def out_dim(self) -> int:
        return self.config.dim

    @property
    def delay_frames(self) -> int:
        return self.config.delay_frames

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """Args: x (B, T, C_in); valid (B, T) bool or None. Returns (B, T, C)."""
        return self.encode_hidden(self.in_proj(x), valid)

    def encode_hidden(
        self, h: torch.Tensor, valid: torch.Tensor | None = None, **mask
    ) -> torch.Tensor:
        """The blocks and final norm over already projected inputs h (B, N, C); `mask`:
        `BidirectionalTemporalAttention.forward`'s keywords (tokens per frame, CLS frames)."""
        for block in self.blocks:
            h = block(h, valid, **mask)
        return self.norm(h)

    def init_cache(
        self,
        batch_size: int,
        *,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> FastBackCache:
        dtype = dtype or self.in_proj.weight.dtype
        device = device or self.in_proj.weight.device
        shapes = self.config.cache_shapes(batch_size)
        return FastBackCache(
            *(
                torch.zeros(shapes[f], device=device, dtype=dtype)
                for f in FastBackCache._fields[:4]
            ),
            count=torch.zeros(shapes["count"], dtype=torch.long, device=device),
        )

    def step(self, x_t: torch.Tensor, cache: FastBackCache) -> tuple[torch.Tensor, FastBackCache]:
        """Encodes one new frame per stream.

        Args: x_t (B, C_in); cache from `init_cache(B)` or the previous `step`.
        Returns: y (B, C), the output for the frame `delay_frames` steps back (meaningless
        while fewer than `delay_frames + 1` frames have been given), and the new cache.
        """
        return self.step_hidden(self.in_proj(x_t), cache)

    def step_hidden(
        self, h: torch.Tensor, cache: FastBackCache
    ) -> tuple[torch.Tensor, FastBackCache]:
        """`step` for an already projected input h (B, C)."""
        if not self.config.streams:
            raise ValueError("an unbounded lookahead (lookahead_frames None) has no streaming step")
        count = cache.count + 1
        keys, values, queries, inputs = [], [], [], []
        for layer, block in enumerate(self.blocks):
            # Layer l's first inputs (its delay) are outputs for frames before the stream began.
            num_valid = (count - self.config.layer_delay(layer)).clamp(min=0)
            h, k, v, q, i = block.step(
                h,
                cache.keys[layer],
                cache.values[layer],
                cache.queries[layer],
                cache.inputs[layer],
                num_valid,
            )
            keys.append(k), values.append(v), queries.append(q), inputs.append(i)
        new_cache = FastBackCache(
            torch.stack(keys),
            torch.stack(values),
            torch.stack(queries),
            torch.stack(inputs),
            count,
        )
        return self.norm(h), new_cache
