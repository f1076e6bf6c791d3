"""Checks one backend against another through the `Backend` interface (preprocessing, cache
handling and all), on fresh random inputs."""

from __future__ import annotations

import numpy as np
import torch

from engine.backends.base import Backend, BackendError
from models.action_model import ModelConfig
from models.heads import head_family

# The largest relative difference to eager fp32 (`max_relative_error`: max |a - b| / max |a|
# over each graph output) a precision may show; a compile beyond it is refused. Measured on
# the bundled model: fp32 below 1e-6; bf16 about 1e-2 on every graph; int8 about 2e-2 on the
# backbone (the temporal step and head stay fp32).
ACCURACY_BOUNDS = {"fp32": 1e-3, "fp16": 2e-2, "bf16": 5e-2, "int8": 1e-1}


class AccuracyError(BackendError):
    """A compiled engine whose outputs differ from eager fp32 beyond its precision's bound."""


def check_accuracy(precision: str, errors: dict[str, float]) -> None:
    """Raises `AccuracyError` naming the graph output beyond the precision's bound."""
    bound = ACCURACY_BOUNDS[precision]
    worst = max(errors, key=errors.get)
    if errors[worst] > bound:
        raise AccuracyError(
            f"{worst} differs from eager fp32 by {errors[worst]:.2e} (relative), beyond "
            f"{precision}'s bound {bound:g}; use a higher precision"
        )


def backend_outputs(
    backend: Backend,
    config: ModelConfig,
    *,
    batch: int = 4,
    steps: int | None = None,
    seed: int = 0,
    frames: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, torch.Tensor]:
    """Every graph's outputs on inputs drawn from `seed`: the backbone on `batch` frames
    (or on `frames`, real frames and their previous ones: a quantised backbone is judged on
    what it will see, not on noise outside its calibrated ranges), `steps` temporal steps
    over `batch` streams (past the lookback window, so the cache wraps), and the head on
    `batch` windows with padded starts."""
    rng = np.random.default_rng(seed)
    if frames is not None:
        images, previous = frames
    elif config.input is not None:  # signal frames: samples around 0
        images = rng.normal(0, 1, (batch, *config.frame_shape)).astype(np.float32)
        previous = images
    else:
        s = config.backbone.image_size
        images = rng.integers(0, 256, (batch, s, s, 3), dtype=np.uint8)
        previous = np.clip(images.astype(np.int16) + rng.integers(-40, 41, images.shape), 0, 255)
        previous = previous.astype(np.uint8)
    features = backend.encode_frames(images, previous)

    t = config.temporal
    steps = steps or t.lookback_frames + t.delay_frames + 4
    gen = torch.Generator().manual_seed(seed)
    xs = torch.randn(steps, batch, config.feature_dim, generator=gen)
    cache = backend.init_cache(batch)
    ys = []
    for x in xs:
        y, cache = backend.temporal_step(x, cache)
        ys.append(y)

    T = config.head.window_frames
    window = torch.randn(batch, T, t.dim, generator=gen)
    valid = torch.ones(batch, T, dtype=torch.bool)
    for b in range(batch):
        valid[b, : (b * T) // (2 * batch)] = False  # streams of different ages
    out = backend.head(window, valid)
    result = {"backbone": features, "temporal_step": torch.stack(ys)}
    for name in head_family(config.head).output_names:  # compared where the head saw frames
        result[f"head_{name}"] = getattr(out, name)[out.valid]
    return result


def differences(
    reference: Backend, other: Backend, config: ModelConfig, **kw
) -> tuple[dict[str, float], dict[str, float]]:
    """(max |a - b|, max |a - b| / max |a|) per output of two backends on the same inputs
    (`backend_outputs`' keywords); the relative one is scale-free, for reduced precisions."""
    a = backend_outputs(reference, config, **kw)
    b = backend_outputs(other, config, **kw)
    absolute = {k: float((a[k].float() - b[k].float()).abs().max()) for k in a}
    relative = {k: absolute[k] / max(float(a[k].float().abs().max()), 1e-12) for k in a}
    return absolute, relative


def compare_backends(
    reference: Backend, other: Backend, config: ModelConfig, *, batch: int = 4, seed: int = 0
) -> dict[str, float]:
    """Max absolute difference per output between two backends on the same inputs."""
    return differences(reference, other, config, batch=batch, seed=seed)[0]


def max_relative_error(
    reference: Backend, other: Backend, config: ModelConfig, **kw
) -> dict[str, float]:
    """Max |a - b| / max |a| per output (scale-free: for fp16 against fp32)."""
    return differences(reference, other, config, **kw)[1]
