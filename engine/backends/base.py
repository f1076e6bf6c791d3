"""The backend contract: what the detector calls on every backend, and what they share.

A backend runs the three parts of the model separately so the detector can batch frames
across streams for the backbone, step the temporal encoder per frame with an explicit cache,
and run the head on a window every S frames. Every backend offers the same methods and
takes and returns CPU torch tensors at this interface.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np
import torch

from engine.backends.graphs import graph_io, wrap_head
from models.action_model import ActionModel, ModelConfig
from models.backbone import BackboneConfig, to_images
from models.fastback import FastBackCache
from models.signal import SignalInput


class BackendError(RuntimeError):
    """A backend that cannot run here; the message says what is missing and how to fix it."""


class Backend(Protocol):
    name: str
    precision: str
    feature_dim: int
    delay_frames: int
    model_config: ModelConfig

    def encode_frames(self, images: np.ndarray, previous: np.ndarray) -> torch.Tensor:
        """(B, H, W, 3) uint8 RGB frames and each one's previous frame (itself at a stream's
        start) → (B, C_f) features; for a signal model (B, W + 1, C_s) float32 frames
        (`previous` unused)."""
        ...

    def init_cache(self, batch_size: int) -> FastBackCache: ...

    def temporal_step(
        self, x: torch.Tensor, cache: FastBackCache
    ) -> tuple[torch.Tensor, FastBackCache]:
        """(B, C_f) + cache → (B, C) + cache."""
        ...

    def head(self, window: torch.Tensor, valid: torch.Tensor):
        """(B, T, C), (B, T) bool → the head's output type (`models.heads`: HeadOutput for
        ActionFormer, FrameLabels for FAFormer)."""
        ...

    def describe(self) -> str:
        """One line: backend, precision, device and options."""
        ...


def frames_to_tensor(images: np.ndarray, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(B, H, W, 3) uint8 → (B, 3, H, W) in [0, 1] on the device (`models.backbone.to_images`
    after the copy, so the division runs there)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device, non_blocking=True)
    return to_images(x, dtype)


def samples_to_tensor(frames: np.ndarray, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(B, W + 1, C) signal frames → the same on the device, in `dtype`."""
    x = torch.from_numpy(np.ascontiguousarray(frames, dtype=np.float32))
    return x.to(device, non_blocking=True).to(dtype)


def empty_cache(config: ModelConfig, batch_size: int, dtype: torch.dtype) -> FastBackCache:
    """A zero FastBack cache on the CPU, from the model config alone (no weights needed)."""
    specs = graph_io(config, "fp32")["temporal_step"]["inputs"][1:]
    tensors = [
        torch.zeros(
            tuple(batch_size if d is None else d for d in s.shape),
            dtype=torch.long if s.dtype == "int64" else dtype,
        )
        for s in specs
    ]
    return FastBackCache(*tensors)


class ModelFacts:
    """What every backend derives from the model config."""

    def _init_facts(self, config: ModelConfig, precision: str) -> None:
        self.model_config = config
        self.precision = precision
        self.feature_dim = config.temporal.dim
        self.delay_frames = config.temporal.delay_frames
        self.motion = config.frontend.uses_previous
        self.frame_tensor = samples_to_tensor if config.input is not None else frames_to_tensor


class ArrayGraphs(ModelFacts):
    """A backend whose graphs take and return numpy arrays (ONNX Runtime, OpenVINO): the
    subclass gives `_run(graph, *arrays)`; inputs go in as `self.np_dtype`, outputs come back
    as float32 torch tensors, the cache stays on the CPU in float32."""

    np_dtype: type = np.float32
    _run: Callable[..., list[np.ndarray]]  # (graph name, *input arrays) -> output arrays

    def _float(self, t: torch.Tensor) -> np.ndarray:
        return t.detach().cpu().numpy().astype(self.np_dtype, copy=False)

    def encode_frames(self, images: np.ndarray, previous: np.ndarray) -> torch.Tensor:
        cpu = torch.device("cpu")
        frames = [images, previous] if self.motion else [images]
        args = [self._float(self.frame_tensor(f, cpu, torch.float32)) for f in frames]
        (features,) = self._run("backbone", *args)
        return _tensor(features)

    def init_cache(self, batch_size: int) -> FastBackCache:
        return empty_cache(self.model_config, batch_size, torch.float32)

    def temporal_step(
        self, x: torch.Tensor, cache: FastBackCache
    ) -> tuple[torch.Tensor, FastBackCache]:
        arrays = [self._float(x), *(self._float(t) for t in cache[:4]), cache.count.numpy()]
        y, *new = self._run("temporal_step", *arrays)
        return _tensor(y), FastBackCache(*(_tensor(a) for a in new[:4]), torch.from_numpy(new[4]))

    def head(self, window: torch.Tensor, valid: torch.Tensor):
        outs = self._run("head", self._float(window), valid.numpy())
        return wrap_head(self.model_config, tuple(_tensor(a) for a in outs), valid)


def _tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a.astype(np.float32, copy=False))


class TorchGraphs(ModelFacts):
    """A backend whose graphs are torch callables on `self.device` in `self.dtype` (the torch
    and TensorRT backends): the temporal step and the head run the same way for both."""

    graphs: dict[str, Callable]
    device: torch.device
    dtype: torch.dtype
    batch_limit: int | None = None  # compiled engines: their profile's largest batch

    def check_batch(self, n: int) -> None:
        if self.batch_limit is not None and n > self.batch_limit:
            raise BackendError(
                f"a batch of {n} is beyond this engine's --max-batch {self.batch_limit}: "
                "recompile with a larger --max-batch or lower engine.max_batch"
            )

    def init_cache(self, batch_size: int) -> FastBackCache:
        """The cache lives on the backend's device, in its precision."""
        cache = empty_cache(self.model_config, batch_size, self.dtype)
        return FastBackCache(*(t.to(self.device) for t in cache))

    @torch.inference_mode()
    def temporal_step(
        self, x: torch.Tensor, cache: FastBackCache
    ) -> tuple[torch.Tensor, FastBackCache]:
        self.check_batch(x.shape[0])
        y, *new = self.graphs["temporal_step"](x.to(self.device, self.dtype), *cache)
        return y.float().cpu(), FastBackCache(*new)

    @torch.inference_mode()
    def head(self, window: torch.Tensor, valid: torch.Tensor):
        self.check_batch(window.shape[0])
        outs = self.graphs["head"](window.to(self.device, self.dtype), valid.to(self.device))
        return wrap_head(self.model_config, tuple(t.float().cpu() for t in outs), valid)


def model_config_of(model: ActionModel) -> ModelConfig:
    """The shape-defining config of a built model, read from its parts (class names are
    placeholders: backends need only their number)."""
    head = model.head
    classes = tuple(f"class{i}" for i in range(head.num_classes))
    frontend = model.backbone.config
    signal = frontend if isinstance(frontend, SignalInput) else None
    return ModelConfig(
        classes=classes,
        input=signal,
        backbone=BackboneConfig() if signal is not None else frontend,
        temporal=model.temporal.config,
        head=head.config,
    )
