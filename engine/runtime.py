"""Runtime backends: the interface the detector calls, and the PyTorch implementation.

A backend runs the three parts of the model separately so the detector can batch frames
across streams for the backbone, step the temporal encoder per frame with an explicit cache,
and run the head on a window every S frames. Other backends (ONNX Runtime, TensorRT) offer
the same methods.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from models.action_model import ActionModel
from models.actionformer import HeadOutput
from models.fastback import FastBackCache


class Backend(Protocol):
    name: str
    feature_dim: int
    delay_frames: int

    def encode_frames(self, images: np.ndarray, previous: np.ndarray) -> torch.Tensor:
        """(B, H, W, 3) uint8 RGB frames and each one's previous frame (itself at a stream's
        start) → (B, C_f) features."""
        ...

    def init_cache(self, batch_size: int) -> FastBackCache: ...

    def temporal_step(
        self, x: torch.Tensor, cache: FastBackCache
    ) -> tuple[torch.Tensor, FastBackCache]:
        """(B, C_f) + cache → (B, C) + cache."""
        ...

    def head(self, window: torch.Tensor, valid: torch.Tensor) -> HeadOutput:
        """(B, T, C), (B, T) bool → HeadOutput."""
        ...


class TorchBackend:
    """Eager PyTorch on CPU or CUDA."""

    name = "torch"

    def __init__(self, model: ActionModel, device: str = "cpu") -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.feature_dim = model.temporal.out_dim
        self.delay_frames = model.temporal.delay_frames
        self.points = model.head.points.cpu()

    @torch.inference_mode()
    def encode_frames(self, images: np.ndarray, previous: np.ndarray) -> torch.Tensor:
        x = self._to_tensor(images)
        prev = self._to_tensor(previous) if self.model.backbone.config.motion_input else None
        return self.model.backbone(x, prev)

    def _to_tensor(self, images: np.ndarray) -> torch.Tensor:
        """(B, H, W, 3) uint8 → (B, 3, H, W) float in [0, 1] on the device."""
        return torch.from_numpy(images).to(self.device).permute(0, 3, 1, 2).float().div_(255.0)

    def init_cache(self, batch_size: int) -> FastBackCache:
        return self.model.temporal.init_cache(batch_size, device=self.device)

    @torch.inference_mode()
    def temporal_step(
        self, x: torch.Tensor, cache: FastBackCache
    ) -> tuple[torch.Tensor, FastBackCache]:
        return self.model.temporal.step(x, cache)

    @torch.inference_mode()
    def head(self, window: torch.Tensor, valid: torch.Tensor) -> HeadOutput:
        out = self.model.head(window.to(self.device), valid.to(self.device))
        return HeadOutput(*(t.cpu() for t in out))
