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

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from models.temporal_attention import BidirectionalTemporalAttention


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


def stack_caches(caches: list[FastBackCache]) -> FastBackCache:
    """Several streams' caches as one, in order (the stream axis is 1, `count`'s is 0), so
    one `step` call advances them all; each stream keeps its own count."""
    if len(caches) == 1:
        return caches[0]
    return FastBackCache(
        *(torch.cat([c[i] for c in caches], dim=1) for i in range(4)),
        torch.cat([c.count for c in caches]),
    )


def split_cache(cache: FastBackCache) -> list[FastBackCache]:
    """`stack_caches` undone: one cache per stream."""
    return [
        FastBackCache(*(t[:, b : b + 1] for t in cache[:4]), cache.count[b : b + 1])
        for b in range(cache.count.shape[0])
    ]


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
