"""The signal front end: multichannel sensor samples (WiFi CSI, IMU) → one feature vector per
frame, in place of the image backbone.

A *frame* of a signal is one hop of `hop_samples` samples; the model's frame rate is derived
from the input (`sample_rate_hz / hop_samples`), never typed by hand. Each frame carries the
last `window_samples` samples up to it and, before them, the one sample that precedes the
window, so that the first-order difference (x[t] - x[t - 1], the seed's `first_diff` network)
is computed inside the frame: causal, and equal across chunk boundaries to the difference of
the whole recording, with no state on the module. At a stream's start the preceding sample is
the first sample itself (no change).

Per-channel normalisation statistics are buffers of the module: computed on the training
subset (`set_statistics`), saved in the checkpoint and used unchanged by the detector.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn


@dataclass(frozen=True, kw_only=True)
class SignalInput:
    """`model.input` for sample streams.

    Attributes:
        kind: "signal".
        channels: C, samples per time step (e.g. 30 CSI subcarriers, 6 IMU axes).
        sample_rate_hz: the sensor's sampling rate.
        window_samples: W, samples each frame's encoder sees (the frame's own hop and the
            ones before it).
        hop_samples: samples between two frames; model.fps = sample_rate_hz / hop_samples.
        diff: "concat" (signal and its first-order difference, 2·C inputs), "only" (the
            difference alone) or "none" (the signal alone).
        normalise: subtract the training subset's per-channel mean and divide by its std.
        encoder_channels: output channels of each stride-2 1-D convolution of the encoder.
        feature_dim: size F of each frame's feature vector.
    """

    kind: Literal["signal"] = "signal"
    channels: int
    sample_rate_hz: float
    window_samples: int
    hop_samples: int
    diff: Literal["concat", "only", "none"] = "concat"
    normalise: bool = True
    encoder_channels: tuple[int, ...] = (64, 128)
    feature_dim: int = 128

    def __post_init__(self) -> None:
        for name in ("channels", "window_samples", "hop_samples", "feature_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"input.{name} must be >= 1, got {getattr(self, name)}")
        if self.sample_rate_hz <= 0:
            raise ValueError(f"input.sample_rate_hz must be positive, got {self.sample_rate_hz}")
        if self.hop_samples > self.window_samples:
            raise ValueError(
                f"input.hop_samples ({self.hop_samples}) must be <= input.window_samples "
                f"({self.window_samples}): every sample must reach a frame"
            )
        if not self.encoder_channels or min(self.encoder_channels) < 1:
            raise ValueError(
                f"input.encoder_channels must be positive, got {self.encoder_channels}"
            )

    @property
    def fps(self) -> float:
        """Frames per second: one frame per hop."""
        return self.sample_rate_hz / self.hop_samples

    @property
    def uses_previous(self) -> bool:
        """A signal frame carries its own preceding sample."""
        return False

    @property
    def frame_shape(self) -> tuple[int, int]:
        """(W + 1, C): a frame's samples, the one before its window first."""
        return (self.window_samples + 1, self.channels)


class SignalFrontEnd(nn.Module):
    """(N, W + 1, C) float samples → (N, F) features: normalise, first-order difference,
    stride-2 1-D convolutions over time, mean and max over time, linear, LayerNorm.

    `previous` is accepted and ignored (the frame carries its own preceding sample), so the
    front end is called like an image backbone."""

    def __init__(self, config: SignalInput) -> None:
        super().__init__()
        self.config = config
        c = config.channels
        self.register_buffer("mean", torch.zeros(c))
        self.register_buffer("std", torch.ones(c))
        c_in = 2 * c if config.diff == "concat" else c
        layers: list[nn.Module] = []
        for c_out in config.encoder_channels:
            layers += [
                nn.Conv1d(c_in, c_out, 5, stride=2, padding=2, bias=False),
                nn.BatchNorm1d(c_out),
                nn.ReLU(inplace=True),
            ]
            c_in = c_out
        self.convs = nn.Sequential(*layers)
        self.proj = nn.Linear(2 * c_in, config.feature_dim)
        self.norm = nn.LayerNorm(config.feature_dim)

    @property
    def feature_dim(self) -> int:
        return self.config.feature_dim

    def set_statistics(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Stores the per-channel normalisation statistics (C,) (std floored at 1e-6)."""
        c = self.config.channels
        if mean.shape != (c,) or std.shape != (c,):
            raise ValueError(f"statistics must have shape ({c},), got {mean.shape}, {std.shape}")
        self.mean.copy_(mean)
        self.std.copy_(std.clamp(min=1e-6))

    def features_in(self, samples: torch.Tensor) -> torch.Tensor:
        """(N, W + 1, C) → (N, W, C') the encoder's input: the window's samples and/or their
        difference to the sample before each (normalised first, when configured)."""
        x = (samples - self.mean) / self.std if self.config.normalise else samples
        diff = x[:, 1:] - x[:, :-1]  # (N, W, C)
        if self.config.diff == "only":
            return diff
        if self.config.diff == "none":
            return x[:, 1:]
        return torch.cat([x[:, 1:], diff], dim=-1)  # (N, W, 2C)

    def forward(self, samples: torch.Tensor, previous: torch.Tensor | None = None) -> torch.Tensor:
        """Args: samples (N, W + 1, C) float. Returns: (N, F)."""
        if samples.dim() != 3 or tuple(samples.shape[1:]) != self.config.frame_shape:
            raise ValueError(
                f"signal frames must be (N, {self.config.frame_shape[0]}, "
                f"{self.config.frame_shape[1]}), got {tuple(samples.shape)}"
            )
        h = self.convs(self.features_in(samples).transpose(1, 2))  # (N, C_last, W')
        pooled = torch.cat([h.mean(-1), h.amax(-1)], dim=1)  # (N, 2 C_last)
        return self.norm(self.proj(pooled))
