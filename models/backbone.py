"""Frame backbone: a small CNN that maps one RGB frame to a feature vector.

Small enough to train on a CPU; batched across streams by the detector and compiled to
TensorRT on a GPU host. Input normalisation lives inside the module so that an exported
graph takes raw [0, 1] RGB.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True, kw_only=True)
class BackboneConfig:
    """Attributes:
    image_size: frames are resized to image_size x image_size before the backbone.
    channels: output channels of each stride-2 stage.
    feature_dim: size C of the per-frame feature vector.
    """

    image_size: int = 64
    channels: tuple[int, ...] = (16, 32, 64, 96)
    feature_dim: int = 128

    def __post_init__(self) -> None:
        if self.image_size < 2 ** len(self.channels):
            raise ValueError(
                f"image_size {self.image_size} too small for {len(self.channels)} stride-2 stages"
            )


class ConvBlock(nn.Module):
    """3x3 conv (stride 2) → BatchNorm → ReLU → 3x3 conv → BatchNorm → ReLU."""

    def __init__(self, *, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class FrameBackbone(nn.Module):
    """(B, 3, H, W) RGB in [0, 1] → (B, C) features."""

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("mean", torch.tensor([0.45, 0.45, 0.45]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.25, 0.25, 0.25]).view(1, 3, 1, 1))
        stages, c_in = [], 3
        for c_out in config.channels:
            stages.append(ConvBlock(in_channels=c_in, out_channels=c_out))
            c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.proj = nn.Linear(c_in, config.feature_dim)
        self.norm = nn.LayerNorm(config.feature_dim)

    @property
    def feature_dim(self) -> int:
        return self.config.feature_dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Args: images (B, 3, H, W) float in [0, 1]. Returns: (B, C)."""
        x = (images - self.mean) / self.std
        x = self.stages(x)  # (B, C_last, H / 2**n, W / 2**n)
        x = x.mean(dim=(2, 3))  # (B, C_last)
        return self.norm(self.proj(x))
