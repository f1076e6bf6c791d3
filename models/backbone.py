"""Frame backbone: a small CNN that maps one RGB frame to a feature vector, its settings
(which also name a pretrained backbone from a local folder instead: `models/frame_encoder.py`),
and the one function that turns decoded frames into the backbones' input.

Small enough to train on a CPU; batched across streams by the detector and compiled to
TensorRT on a GPU host. Input normalisation lives inside the module so that an exported
graph takes raw [0, 1] RGB. The last feature map is flattened rather than averaged: where
things are in the frame matters, since actions are defined by how things move.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True, kw_only=True)
class BackboneConfig:
    """Attributes:
    name: "builtin" (the CNN below, trained from scratch), or a pretrained image model in a
        local folder: "hf:DIR" (Hugging Face `AutoModel`), "timm:DIR", or a plain DIR
        (recognised by its config.json). Never a download.
    image_size: frames are resized to image_size x image_size before the backbone.
    channels: output channels of each stride-2 stage (built-in CNN).
    feature_dim: size C of the per-frame feature vector (a pretrained model's own size:
        its pooled output).
    motion_input: also feed the difference between the frame and the previous one (the
        computation stays per frame; motion, which defines the actions, becomes explicit).
        Built-in CNN only: a pretrained model sees single frames.
    """

    name: str = "builtin"
    image_size: int = 64
    channels: tuple[int, ...] = (16, 32, 64, 96)
    feature_dim: int = 128
    motion_input: bool = True

    @property
    def uses_previous(self) -> bool:
        """Whether the backbone takes each frame's predecessor as a second input."""
        return self.motion_input and self.name == "builtin"

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
    """(B, 3, H, W) RGB in [0, 1] (and the previous frames, with `motion_input`) → (B, C)."""

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("mean", torch.tensor([0.45, 0.45, 0.45]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.25, 0.25, 0.25]).view(1, 3, 1, 1))
        stages, c_in = [], 6 if config.motion_input else 3
        for c_out in config.channels:
            stages.append(ConvBlock(in_channels=c_in, out_channels=c_out))
            c_in = c_out
        self.stages = nn.Sequential(*stages)
        side = config.image_size
        for _ in config.channels:
            side = (side + 1) // 2  # each stage: 3x3 conv, stride 2, padding 1
        self.proj = nn.Linear(c_in * side * side, config.feature_dim)
        self.norm = nn.LayerNorm(config.feature_dim)

    @property
    def feature_dim(self) -> int:
        return self.config.feature_dim

    def forward(self, images: torch.Tensor, previous: torch.Tensor | None = None) -> torch.Tensor:
        """Args: images (B, 3, H, W) float in [0, 1]; previous (B, 3, H, W), each stream's
        frame before (with `motion_input`; None at a stream's start = no motion).
        Returns: (B, C)."""
        return self.norm(self.proj(self.feature_map(images, previous).flatten(1)))  # (B, C)

    def feature_map(
        self, images: torch.Tensor, previous: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The last stage's map (B, channels[-1], H / 2**n, W / 2**n), before the projection
        (FastBack's spatial tokens)."""
        x = (images - self.mean) / self.std
        if self.config.motion_input:
            diff = images - previous if previous is not None else torch.zeros_like(images)
            x = torch.cat([x, diff / self.std], dim=1)  # (B, 6, H, W)
        return self.stages(x)


def previous_frames(frames: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Each frame's predecessor along time: (B, T, ...) → (B, T, ...). A frame without one
    (the first, or the first after padding, where `valid` (B, T) is False) is its own
    predecessor, i.e. shows no motion, as at the start of a live stream."""
    prev = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)
    if valid is not None:
        has_prev = torch.cat([torch.zeros_like(valid[:, :1]), valid[:, :-1]], dim=1)
        has_prev = has_prev.view(*has_prev.shape, *([1] * (frames.dim() - 2)))
        prev = torch.where(has_prev, prev, frames)
    return prev


def to_images(frames: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Decoded frames (N, H, W, 3) uint8 (or float in [0, 1]) → (N, 3, H, W) in [0, 1] of
    `dtype`, the input of every backbone."""
    x = frames.permute(0, 3, 1, 2)
    return x.to(dtype) if x.is_floating_point() else x.to(dtype).div(255.0)
