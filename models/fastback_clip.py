"""FastBack over raw video: frame backbone with spatial tokens, start/end CLS frames,
lookback/lookahead blocks, CLS pooling.

`FastBack(video)` takes (B, T, H, W, C) frames and returns, as FastBack itself does, the
outputs of every token of every frame, CLS frames included, (B, T + 2, P, C), and a clip token
(B, 2C). The sequence the blocks see is

    [start CLS, frame 0, ..., frame T-1, end CLS], each frame P tokens

where a frame's P tokens are the backbone's last spatial map pooled to `spatial_grid` ×
`spatial_grid` (None: every position, a ViT's every patch token; 1: one vector per frame, the
backbone's pooled feature) plus a learned embedding per position. Bands and biases are over
frame offsets: a token sees the tokens of the frames its head's band allows, its own frame's
included.

Offline (`forward`, the default) the two CLS frames are *global*: each reads every token and
every token reads them, as in FastBack's later version, so lookback-only heads still give a
clip-level view. `forward(..., causal=True)` is the streaming form that `init_stream` / `step`
equal: the start CLS frame is an ordinary first frame inside the bands and the end CLS frame
reads every token while no frame reads it (so per-frame outputs do not depend on where a clip
ends). The clip token is parameter-free by default, as FastBack pools: each CLS frame's tokens
averaged, the two concatenated (B, 2C); `cls_projection` adds a learned LayerNorm(Linear) to C.
`ClipClassifier` adds a linear layer on the clip token for clip recognition.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import nn

from models.backbone import BackboneConfig
from models.fastback import FastBackCache, FastBackEncoder, TemporalConfig
from models.frame_encoder import BackboneFrameEncoder, ExternalBackbone


class AddCLSFrames(nn.Module):
    """(B, T, P, C) → (B, T + 2, P, C): a learned start CLS frame before, an end CLS frame
    after (P tokens each). The valid mask (B, T) grows to (B, T + 2) with both valid."""

    def __init__(self, dim: int, tokens: int = 1) -> None:
        super().__init__()
        self.start = nn.Parameter(torch.randn(tokens, dim) * 0.02)
        self.end = nn.Parameter(torch.randn(tokens, dim) * 0.02)

    def forward(
        self, x: torch.Tensor, valid: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, _, P, C = x.shape
        x = torch.cat([self.start.expand(B, 1, P, C), x, self.end.expand(B, 1, P, C)], dim=1)
        if valid is not None:
            ones = torch.ones(B, 1, dtype=torch.bool, device=valid.device)
            valid = torch.cat([ones, valid, ones], dim=1)
        return x, valid


class CLSPooling(nn.Module):
    """The clip token from the encoded start and end CLS frames (B, P, C) each: their tokens
    averaged and concatenated, (B, 2C), parameter-free; with `projection`,
    LayerNorm(Linear(·)) → (B, C)."""

    def __init__(self, dim: int, projection: bool = False) -> None:
        super().__init__()
        self.out_dim = dim if projection else 2 * dim
        self.proj = (
            nn.Sequential(nn.Linear(2 * dim, dim), nn.LayerNorm(dim)) if projection else None
        )

    def forward(self, start: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([start.mean(1), end.mean(1)], dim=-1)
        return pooled if self.proj is None else self.proj(pooled)


@dataclass(frozen=True, kw_only=True)
class FastBackConfig:
    """Attributes:
    num_hidden_layers: BTTransformer blocks.
    num_attention_heads: heads per block = num_lookback_heads + num_lookahead_heads.
    num_lookahead_heads: heads that look ahead.
    num_lookback_heads: heads that look back (None: the rest of num_attention_heads).
    image_size: frames are resized to image_size x image_size.
    backbone_name: "builtin", "hf:DIR", "timm:DIR" or a local model folder.
    hidden_size: width C of the blocks (None: the backbone's width when the heads divide it,
        else 64 per attention head).
    spatial_grid: tokens per frame: the backbone's last map pooled to this × this (None:
        every position of it; 1: the backbone's pooled feature, one token per frame).
    freeze_backbone: the backbone's weights are not trained (and it stays in eval mode), as
        FastBack runs its pretrained backbone; the built-in CNN, which starts random, needs
        false.
    cls_projection: a learned projection of the clip token to C (default: parameter-free,
        (B, 2C)).
    global_cls: offline, the CLS frames read every token and every token reads them (false:
        the streaming form, `forward(..., causal=True)`, always).
    lookback_frames: the lookback band (see `TemporalConfig`).
    lookahead_frames: how far lookahead heads see (None: every later frame of the clip, as
        in FastBack itself; a number bounds it, which a streaming `step` needs).
    backbone: the built-in CNN's settings (backbone_name "builtin").
    dropout: in attention outputs and feed-forward (training only).
    """

    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_lookahead_heads: int = 0
    num_lookback_heads: int | None = None
    image_size: int = 64
    backbone_name: str = "builtin"
    hidden_size: int | None = None
    lookback_frames: int = 32
    lookahead_frames: int | None = None
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    dropout: float = 0.0
    spatial_grid: int | None = None
    freeze_backbone: bool = True
    cls_projection: bool = False
    global_cls: bool = True

    def __post_init__(self) -> None:
        if self.spatial_grid is not None and self.spatial_grid < 1:
            raise ValueError(f"spatial_grid must be >= 1 or null, got {self.spatial_grid}")
        back = self.lookback_heads
        if back + self.num_lookahead_heads != self.num_attention_heads:
            raise ValueError(
                f"num_lookback_heads ({back}) + num_lookahead_heads ({self.num_lookahead_heads}) "
                f"must equal num_attention_heads ({self.num_attention_heads})"
            )

    @property
    def lookback_heads(self) -> int:
        if self.num_lookback_heads is None:
            return self.num_attention_heads - self.num_lookahead_heads
        return self.num_lookback_heads

    def width(self, backbone_dim: int) -> int:
        """C, the blocks' width, for a backbone giving `backbone_dim` features per token."""
        if self.hidden_size is not None:
            return self.hidden_size
        if backbone_dim % self.num_attention_heads == 0:
            return backbone_dim
        return self.num_attention_heads * 64

    def temporal(self, width: int) -> TemporalConfig:
        # no lookahead heads: a causal encoder, which streams
        lookahead = 0 if self.num_lookahead_heads == 0 else self.lookahead_frames
        return TemporalConfig(
            dim=width,
            num_layers=self.num_hidden_layers,
            num_lookback_heads=self.lookback_heads,
            num_lookahead_heads=self.num_lookahead_heads,
            lookback_frames=self.lookback_frames,
            lookahead_frames=lookahead,
            dropout=self.dropout,
        )


class FastBackStream(NamedTuple):
    """Streaming state: the encoder's cache and each stream's previous frame (B, 3, S, S)."""

    cache: FastBackCache
    previous: torch.Tensor | None


class FastBack(nn.Module):
    """video (B, T, H, W, C) → (outputs (B, T + 2, P, C), clip token (B, 2C)).

    Keyword arguments are `FastBackConfig`'s fields, or pass `config=`. `backbone_loader`
    builds a backbone other than "builtin" (`engine.backbones.load_backbone`).
    """

    def __init__(
        self,
        config: FastBackConfig | None = None,
        *,
        backbone_loader: Callable[[str], ExternalBackbone] | None = None,
        **kwargs,
    ) -> None:
        super().__init__()
        self.config = config = config or FastBackConfig(**kwargs)
        self.frames = BackboneFrameEncoder(
            backbone_name=config.backbone_name,
            image_size=config.image_size,
            builtin=config.backbone,
            loader=backbone_loader,
        )
        self.grid = config.spatial_grid
        if self.grid == 1:  # one token per frame: the backbone's pooled feature
            token_dim, self.num_tokens = self.frames.feature_dim, 1
        else:
            token_dim, positions = self.frames.map_shape()
            self.num_tokens = positions if self.grid is None else self.grid * self.grid
        self.width = config.width(token_dim)
        self.encoder = FastBackEncoder(config.temporal(self.width), in_dim=token_dim)
        self.position = (
            nn.Parameter(torch.zeros(self.num_tokens, self.width)) if self.num_tokens > 1 else None
        )
        self.add_cls = AddCLSFrames(self.width, self.num_tokens)
        self.pool = CLSPooling(self.width, config.cls_projection)
        if config.freeze_backbone:
            self.frames.net.requires_grad_(False)

    @property
    def delay_frames(self) -> int:
        return self.encoder.delay_frames

    @property
    def out_dim(self) -> int:
        """Width of the clip token."""
        return self.pool.out_dim

    def train(self, mode: bool = True) -> FastBack:
        super().train(mode)
        if self.config.freeze_backbone:
            self.frames.net.eval()  # a frozen backbone keeps its normalisation statistics
        return self

    def forward(
        self, video: torch.Tensor, valid: torch.Tensor | None = None, *, causal: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Args: video (B, T, H, W, C) uint8 or float in [0, 1]; valid (B, T) bool (False =
        padding); causal: the streaming form (module docstring) instead of global CLS
        frames. Returns outputs (B, T + 2, P, C) — start CLS, the frames, end CLS — and the
        clip token (B, 2C) (or (B, C) with `cls_projection`)."""
        if self.grid == 1:
            tokens = self.frames(video, valid).unsqueeze(2)  # (B, T, 1, F)
        else:
            tokens = self.frames.tokens(video, valid, self.grid)  # (B, T, P, F)
        h = self.encoder.in_proj(tokens)
        if self.position is not None:
            h = h + self.position
        h, valid2 = self.add_cls(h, valid)
        B, T2, P, C = h.shape
        frame_of = torch.arange(T2, device=h.device).repeat_interleave(P)
        token_valid = None if valid2 is None else valid2.repeat_interleave(P, dim=1)
        if causal or not self.config.global_cls:
            mask = {"end_cls": True}
        else:
            mask = {"global_tokens": (frame_of == 0) | (frame_of == T2 - 1)}
        out = self.encoder.encode_hidden(
            h.reshape(B, T2 * P, C), token_valid, frames=frame_of, **mask
        ).view(B, T2, P, C)
        return out, self.pool(out[:, 0], out[:, -1])

    @staticmethod
    def frame_outputs(outputs: torch.Tensor) -> torch.Tensor:
        """(B, T + 2, P, C) outputs → one vector per frame (B, T, C): the CLS frames left out,
        each frame's tokens averaged (the reduction the detector's encoder streams)."""
        return outputs[:, 1:-1].mean(2)

    def init_stream(self, batch_size: int) -> FastBackStream:
        """A new stream per row, which has already seen its start CLS frame (equal to
        `forward(..., causal=True)`; one token per frame only)."""
        if not self.encoder.config.streams:
            raise ValueError("an unbounded lookahead (lookahead_frames None) has no streaming step")
        if self.num_tokens != 1:
            raise ValueError(
                "streaming FastBack takes one token per frame: spatial_grid 1 (spatial "
                "tokens run offline only)"
            )
        p = self.encoder.in_proj.weight
        cache = self.encoder.init_cache(batch_size, device=p.device, dtype=p.dtype)
        _, cache = self.encoder.step_hidden(self.add_cls.start.expand(batch_size, -1), cache)
        return FastBackStream(cache, None)

    def step(
        self, frame: torch.Tensor, state: FastBackStream
    ) -> tuple[torch.Tensor, FastBackStream]:
        """One new frame (B, H, W, C) per stream → the output (B, C) for the frame
        `delay_frames` steps back (meaningless until that frame exists) and the new state."""
        images = self.frames.images(frame)
        previous = images if state.previous is None else state.previous
        features = self.frames.encode(images, previous)
        y, cache = self.encoder.step(features, state.cache)
        return y, FastBackStream(cache, images)


class ClipClassifier(nn.Module):
    """FastBack + a linear classifier on the CLS token: (B, T, H, W, C) → logits (B, K)."""

    def __init__(
        self,
        config: FastBackConfig,
        num_classes: int,
        backbone_loader: Callable[[str], ExternalBackbone] | None = None,
    ) -> None:
        super().__init__()
        self.fastback = FastBack(config, backbone_loader=backbone_loader)
        self.classifier = nn.Linear(self.fastback.out_dim, num_classes)

    def forward(self, video: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        return self.classifier(self.fastback(video, valid)[1])
