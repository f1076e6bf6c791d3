"""Frame backbones built from their settings, and `BackboneFrameEncoder`: video
(B, T, H, W, C) → per-frame features (B, T, F).

`build_frame_backbone(config, loader)` is the one place a frame backbone is made, for the
detector's `ActionModel` and for FastBack over clips alike:

* `builtin` — actstream's small CNN (`models/backbone.py`, with the frame difference as
  motion input), trained from scratch;
* any other name (`hf:DIR`, `timm:DIR`, a local model folder) — a `PretrainedBackbone` around
  the `ExternalBackbone` that the `loader` given makes (`engine.backbones.load_backbone`:
  models/ never reads files), e.g. a Hugging Face ResNet, ConvNeXt or ViT, or a timm model.

Every backbone takes (N, 3, S, S) RGB in [0, 1] (and, the built-in CNN with motion input, each
frame's predecessor) and returns (N, F).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from models.backbone import BackboneConfig, FrameBackbone, previous_frames, to_images

BackboneLoader = Callable[[str], "ExternalBackbone"]


class ExternalBackbone(NamedTuple):
    """A loaded image backbone: kind ("hf" or "timm"), the module (images normalised with
    mean/std → features), its feature size, and the normalisation it expects."""

    kind: str
    module: nn.Module
    feature_dim: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


class PretrainedBackbone(nn.Module):
    """A pretrained image model as a frame backbone: (N, 3, S, S) in [0, 1] → (N, F).

    Normalises with the model's own mean and std; a Hugging Face model's features are its
    pooled output (or its last hidden state averaged over positions). `previous` is accepted
    and ignored: the model sees single frames.
    """

    def __init__(self, config: BackboneConfig, external: ExternalBackbone) -> None:
        super().__init__()
        self.config, self.kind, self.net = config, external.kind, external.module
        self.register_buffer("mean", torch.tensor(external.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(external.std).view(1, 3, 1, 1), persistent=False)

    @property
    def feature_dim(self) -> int:
        return self.config.feature_dim

    def forward(self, images: torch.Tensor, previous: torch.Tensor | None = None) -> torch.Tensor:
        x = (images - self.mean) / self.std
        if self.kind != "hf":
            return self.net(x)
        out = self.net(pixel_values=x)
        pooled = getattr(out, "pooler_output", None)
        if pooled is None:
            pooled = out.last_hidden_state.mean(1)
        return pooled.flatten(1)

    def feature_map(
        self, images: torch.Tensor, previous: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The model's last spatial map (N, C, h, w): a CNN's last stage, or a ViT's patch
        tokens laid out on their grid (its CLS and register tokens left out)."""
        x = (images - self.mean) / self.std
        if self.kind == "hf":
            h = self.net(pixel_values=x).last_hidden_state
        else:
            h = self.net.forward_features(x)
        return token_grid(h)


def token_grid(h: torch.Tensor) -> torch.Tensor:
    """(N, C, h, w) as it is, or (N, L, C) tokens → (N, C, s, s) from the last s² of them
    (the leading ones — CLS, registers — are not patches; s² is the largest square ≤ L)."""
    if h.dim() == 4:
        return h
    if h.dim() != 3:
        raise ValueError(f"backbone gives {tuple(h.shape)}: no spatial map to take tokens from")
    n, length, c = h.shape
    side = int(length**0.5)
    patches = h[:, length - side * side :]
    return patches.transpose(1, 2).reshape(n, c, side, side)


def load_external(name: str, loader: BackboneLoader | None) -> ExternalBackbone:
    if loader is None:
        raise ValueError(
            f"backbone {name!r}: give a loader (engine.backbones.load_backbone) to build a "
            "backbone other than 'builtin'"
        )
    return loader(name)


def build_frame_backbone(config: BackboneConfig, loader: BackboneLoader | None = None) -> nn.Module:
    """The frame backbone `config` names. A pretrained one needs `loader` (models/ reads no
    files) and must give `config.feature_dim` features (the exported graphs are laid out from
    the config alone)."""
    if config.name == "builtin":
        return FrameBackbone(config)
    external = load_external(config.name, loader)
    if external.feature_dim != config.feature_dim:
        raise ValueError(
            f"backbone {config.name!r} gives {external.feature_dim}-dim features; set "
            f"backbone.feature_dim to {external.feature_dim}"
        )
    return PretrainedBackbone(config, external)


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
        loader: BackboneLoader | None = None,
    ) -> None:
        super().__init__()
        self.image_size = image_size
        cfg = dataclasses.replace(
            builtin or BackboneConfig(), name="builtin", image_size=image_size
        )
        if backbone_name == "builtin":
            self.net: nn.Module = FrameBackbone(cfg)
        else:  # the clip model takes its feature size from the pretrained model
            external = load_external(backbone_name, loader)
            cfg = dataclasses.replace(
                cfg, name=backbone_name, feature_dim=external.feature_dim, motion_input=False
            )
            self.net = PretrainedBackbone(cfg, external)
        self.kind = getattr(self.net, "kind", "builtin")
        self.feature_dim = cfg.feature_dim

    def images(self, video: torch.Tensor) -> torch.Tensor:
        """(N, H, W, 3) uint8 or float in [0, 1] → (N, 3, S, S) float in [0, 1], resized."""
        x = to_images(video)
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(
                x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False
            )
        return x

    def encode(self, images: torch.Tensor, previous: torch.Tensor | None) -> torch.Tensor:
        """(N, 3, S, S) frames (and each one's predecessor, for motion input) → (N, F)."""
        return self.net(images, previous)

    def _frames(self, video: torch.Tensor, valid: torch.Tensor | None):
        B, T = video.shape[:2]
        x = self.images(video.flatten(0, 1)).view(B, T, 3, self.image_size, self.image_size)
        prev = previous_frames(x, valid).flatten(0, 1) if self.net.config.uses_previous else None
        return x.flatten(0, 1), prev

    def forward(self, video: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """Args: video (B, T, H, W, 3) uint8 or float in [0, 1]; valid (B, T) bool.
        Returns: (B, T, F)."""
        return self.encode(*self._frames(video, valid)).view(*video.shape[:2], -1)

    def tokens(
        self, video: torch.Tensor, valid: torch.Tensor | None = None, grid: int | None = None
    ) -> torch.Tensor:
        """Spatial tokens per frame: (B, T, P, C) from the backbone's last map (C:
        `map_channels`), average-pooled to grid × grid (None: every position, P = h · w)."""
        m = self.net.feature_map(*self._frames(video, valid))
        if grid is not None:
            m = F.adaptive_avg_pool2d(m, grid)
        return m.flatten(2).transpose(1, 2).reshape(*video.shape[:2], -1, m.shape[1])

    def map_shape(self) -> tuple[int, int]:
        """(channels, positions) of the backbone's last map for this image size (one dry run
        on a blank frame)."""
        blank = torch.zeros(1, 3, self.image_size, self.image_size)
        p = next(self.net.parameters())
        with torch.no_grad():
            m = self.net.feature_map(blank.to(p.device, p.dtype), None)
        return int(m.shape[1]), int(m.shape[2] * m.shape[3])
