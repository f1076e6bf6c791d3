"""`BackboneFrameEncoder`: video (B, T, H, W, C) → per-frame features (B, T, F).

Resizes each frame to the backbone's input size and normalises it, then runs one of:

* `builtin` — actstream's small CNN (`models/backbone.py`, with the frame difference as
  motion input), trained from scratch;
* any other name (`hf:DIR`, `timm:DIR`, a local model folder) — an `ExternalBackbone` made by
  the `loader` given (`engine.backbones.load_backbone`: models/ never reads files), e.g. a
  Hugging Face ResNet, ConvNeXt or ViT, or a timm model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from models.backbone import BackboneConfig, FrameBackbone, previous_frames


class ExternalBackbone(NamedTuple):
    """A loaded image backbone: kind ("hf" or "timm"), the module (images normalised with
    mean/std → features), its feature size, and the normalisation it expects."""

    kind: str
    module: nn.Module
    feature_dim: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


class BackboneFrameEncoder(nn.Module):
    """Per-frame image backbone over videos.

    Args:
        backbone_name: "builtin", or a name for `loader` ("hf:DIR", "timm:DIR", a folder).
        image_size: frames are resized to image_size x image_size.
        builtin: the built-in CNN's settings (image_size is taken from the argument above).
        loader: makes the backbone of a name other than "builtin"
            (`engine.backbones.load_backbone`).
    """

    def __init__(
        self,
        *,
        backbone_name: str = "builtin",
        image_size: int = 64,
        builtin: BackboneConfig | None = None,
        loader: Callable[[str], ExternalBackbone] | None = None,
    ) -> None:
        super().__init__()
        self.image_size = image_size
        if backbone_name == "builtin":
            self.kind = "builtin"
            cfg = builtin or BackboneConfig()
            self.net = FrameBackbone(
                BackboneConfig(
                    image_size=image_size,
                    channels=cfg.channels,
                    feature_dim=cfg.feature_dim,
                    motion_input=cfg.motion_input,
                )
            )
            self.feature_dim = cfg.feature_dim
            mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)  # FrameBackbone normalises itself
        else:
            if loader is None:
                raise ValueError(
                    f"backbone {backbone_name!r}: give a loader (engine.backbones.load_backbone)"
                    " to build a backbone other than 'builtin'"
                )
            self.kind, self.net, self.feature_dim, mean, std = loader(backbone_name)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def images(self, video: torch.Tensor) -> torch.Tensor:
        """(N, H, W, 3) uint8 or float in [0, 1] → (N, 3, S, S) float in [0, 1], resized."""
        x = video.permute(0, 3, 1, 2)
        x = x.float().div(255.0) if not x.is_floating_point() else x.float()
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(
                x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False
            )
        return x

    def encode(self, images: torch.Tensor, previous: torch.Tensor | None) -> torch.Tensor:
        """(N, 3, S, S) frames (and each one's predecessor, for the built-in CNN) → (N, F)."""
        if self.kind == "builtin":
            return self.net(images, previous)
        x = (images - self.mean) / self.std
        if self.kind == "hf":
            out = self.net(pixel_values=x)
            pooled = getattr(out, "pooler_output", None)
            if pooled is None:
                pooled = out.last_hidden_state.mean(1)
            return pooled.flatten(1)
        return self.net(x)

    def forward(self, video: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """Args: video (B, T, H, W, 3) uint8 or float in [0, 1]; valid (B, T) bool.
        Returns: (B, T, F)."""
        B, T = video.shape[:2]
        x = self.images(video.flatten(0, 1)).view(B, T, 3, self.image_size, self.image_size)
        prev = previous_frames(x, valid).flatten(0, 1) if self.kind == "builtin" else None
        return self.encode(x.flatten(0, 1), prev).view(B, T, -1)
