"""The whole detector network: frame backbone → FastBack temporal encoder → head
(ActionFormer: scored segments; or FAFormer: labels per frame).

Composition takes built parts, so tests inject tiny ones; `build_model` builds the parts from
a `ModelConfig`. The streaming detector calls the parts one by one (backbone per batch of
frames, `temporal.step` per frame, head per window); `forward` runs all three over whole
clips for training and offline evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from models.actionformer import HeadConfig, HeadOutput
from models.backbone import BackboneConfig, previous_frames
from models.faformer import FAFormerConfig, FrameLabels
from models.fastback import FastBackEncoder, TemporalConfig
from models.frame_encoder import BackboneLoader, build_frame_backbone
from models.heads import build_head
from models.signal import SignalFrontEnd, SignalInput

# The synthetic source's classes (stream/synthetic.py), the default until a checkpoint says.
DEFAULT_CLASSES: tuple[str, ...] = ("jump", "spin", "wave", "pulse", "flash", "dash")


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Attributes:
    classes: action class names, in the order of the classifier's outputs.
    fps: frame rate the model works at; video sources are sampled to it (default 10). With
        a signal input it is derived (sample_rate_hz / hop_samples) and must not be given
        otherwise.
    seed: seed of the random initialisation (used when no weights are given).
    input: None for video frames (through `backbone`), or `SignalInput` (kind: signal):
        sample streams through the signal front end instead of an image backbone.
    backbone, temporal, head: the parts' settings; `head.type` picks the head
        ("actionformer" or "faformer"; `head: faformer` means FAFormer's defaults).
    """

    classes: tuple[str, ...] = DEFAULT_CLASSES
    fps: float | None = None
    seed: int = 0
    input: SignalInput | None = None
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    temporal: TemporalConfig = field(default_factory=TemporalConfig)
    head: HeadConfig | FAFormerConfig = field(default_factory=HeadConfig)

    def __post_init__(self) -> None:
        if not self.classes:
            raise ValueError("classes must not be empty")
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"classes must be unique, got {self.classes}")
        if self.input is not None:
            derived = self.input.fps
            if self.fps is not None and abs(self.fps - derived) > 1e-6 * derived:
                raise ValueError(
                    f"fps {self.fps} contradicts the signal input: it is derived as "
                    f"input.sample_rate_hz / input.hop_samples = {derived:g}; leave model.fps out"
                )
            object.__setattr__(self, "fps", derived)
        elif self.fps is None:
            object.__setattr__(self, "fps", 10.0)
        if self.fps <= 0:
            raise ValueError(f"fps must be positive, got {self.fps}")
        if not self.temporal.streams:
            raise ValueError(
                "temporal.lookahead_frames must be a number for the streaming detector "
                "(0: causal); None is for clip models"
            )

    @property
    def frontend(self) -> BackboneConfig | SignalInput:
        """What makes each frame's feature: the signal input, or the image backbone."""
        return self.input if self.input is not None else self.backbone

    @property
    def feature_dim(self) -> int:
        """Size of each frame's feature (the temporal encoder's input)."""
        return self.frontend.feature_dim

    @property
    def frame_shape(self) -> tuple[int, ...]:
        """One frame as a reader delivers it: (H, W, 3) uint8 RGB, or (W + 1, C) float32
        samples."""
        if self.input is not None:
            return self.input.frame_shape
        s = self.backbone.image_size
        return (s, s, 3)


class ActionModel(nn.Module):
    """backbone (B·T, 3, H, W) → (B·T, C_f) (or the signal front end: (B·T, W + 1, C_s) →
    (B·T, C_f)); temporal (B, T, C_f) → (B, T, C); head → HeadOutput."""

    def __init__(
        self,
        *,
        backbone: nn.Module,
        temporal: FastBackEncoder,
        head: nn.Module,
    ):
        super().__init__()
        self.backbone = backbone
        self.temporal = temporal
        self.head = head

    def forward(
        self, clips: torch.Tensor, valid: torch.Tensor | None = None
    ) -> HeadOutput | FrameLabels:
        """Args: clips (B, T, 3, H, W) in [0, 1] (signals: (B, T, W + 1, C_s)),
        T = head.window_frames; valid (B, T)."""
        B, T = clips.shape[:2]
        prev = None
        if self.backbone.config.uses_previous:
            prev = previous_frames(clips, valid).flatten(0, 1)
        feats = self.backbone(clips.flatten(0, 1), prev).view(B, T, -1)  # (B, T, C_f)
        return self.head(self.temporal(feats, valid), valid)


def build_model(
    config: ModelConfig, *, backbone_loader: BackboneLoader | None = None
) -> ActionModel:
    """Builds the network with a seeded random initialisation (a pretrained frame backbone
    keeps its own weights; `backbone_loader` loads it: `engine.backbones.load_backbone`)."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(config.seed)
    try:
        if config.input is not None:
            backbone: nn.Module = SignalFrontEnd(config.input)
        else:
            backbone = build_frame_backbone(config.backbone, backbone_loader)
        temporal = FastBackEncoder(config.temporal, in_dim=backbone.feature_dim)
        head = build_head(config.head, in_dim=temporal.out_dim, num_classes=len(config.classes))
    finally:
        torch.random.set_rng_state(generator_state)
    return ActionModel(backbone=backbone, temporal=temporal, head=head)
