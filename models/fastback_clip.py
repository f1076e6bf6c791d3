"""FastBack over raw video: frame backbone, start/end CLS frames, lookback/lookahead blocks,
CLS pooling.

`FastBack(video)` takes (B, T, H, W, C) frames and returns per-frame outputs (B, T, C) and a
clip-level token (B, C). The sequence the blocks see is

    [start CLS, frame 0, ..., frame T-1, end CLS]

The start CLS frame is an ordinary (learned) first frame: frames attend to it through the
same lookback/lookahead bands as to any other, so the streaming path (`init_stream`, `step`)
begins every stream with it and stays exactly equal to `forward`. The end CLS frame attends
to every position and no frame attends to it (`end_cls` masking block), so per-frame outputs
do not depend on where a clip ends. `CLSPooling` reads the clip's representation from both
CLS outputs. `ClipClassifier` adds a linear layer on the CLS token for clip recognition.
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
    """(B, T, C) → (B, T + 2, C): a learned start CLS frame before, an end CLS frame after.
    The valid mask (B, T) grows to (B, T + 2) with both CLS frames valid."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.start = nn.Parameter(torch.randn(dim) * 0.02)
        self.end = nn.Parameter(torch.randn(dim) * 0.02)

    def forward(
        self, x: torch.Tensor, valid: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, _, C = x.shape
        x = torch.cat([self.start.expand(B, 1, C), x, self.end.expand(B, 1, C)], dim=1)
        if valid is not None:
            ones = torch.ones(B, 1, dtype=torch.bool, device=valid.device)
            valid = torch.cat([ones, valid, ones], dim=1)
        return x, valid


class CLSPooling(nn.Module):
    """Sequence-level representation from the encoded start and end CLS frames:
    LayerNorm(Linear([start; end])) → (B, C)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(2 * dim, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, start: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(torch.cat([start, end], dim=-1)))


@dataclass(frozen=True, kw_only=True)
class FastBackConfig:
    """Attributes:
    num_hidden_layers: BTTransformer blocks.
    num_attention_heads: heads per block = num_lookback_heads + num_lookahead_heads.
    num_lookahead_heads: heads that look ahead.
    num_lookback_heads: heads that look back (None: the rest of num_attention_heads).
    image_size: frames are resized to image_size x image_size.
    backbone_name: "builtin", "hf:DIR", "timm:DIR" or a local model folder.
    hidden_size: width C of the blocks (None: 64 per attention head, as in ViT-style models).
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

    def __post_init__(self) -> None:
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

    @property
    def width(self) -> int:
        """C, the blocks' width."""
        return self.num_attention_heads * 64 if self.hidden_size is None else self.hidden_size

    def temporal(self) -> TemporalConfig:
        # no lookahead heads: a causal encoder, which streams
        lookahead = 0 if self.num_lookahead_heads == 0 else self.lookahead_frames
        return TemporalConfig(
            dim=self.width,
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
    """video (B, T, H, W, C) → (outputs (B, T, C), cls_token (B, C)).

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
        self.encoder = FastBackEncoder(config.temporal(), in_dim=self.frames.feature_dim)
        self.add_cls = AddCLSFrames(config.width)
        self.pool = CLSPooling(config.width)

    @property
    def delay_frames(self) -> int:
        return self.encoder.delay_frames

    def forward(
        self, video: torch.Tensor, valid: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Args: video (B, T, H, W, C) uint8 or float in [0, 1]; valid (B, T) bool (False =
        padding). Returns outputs (B, T, C) and the CLS token (B, C)."""
        h = self.encoder.in_proj(self.frames(video, valid))
        h, valid2 = self.add_cls(h, valid)
        h = self.encoder.encode_hidden(h, valid2, end_cls=True)
        return h[:, 1:-1], self.pool(h[:, 0], h[:, -1])

    def init_stream(self, batch_size: int) -> FastBackStream:
        """A new stream per row, which has already seen its start CLS frame."""
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
        self.classifier = nn.Linear(config.width, num_classes)

    def forward(self, video: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        return self.classifier(self.fastback(video, valid)[1])
