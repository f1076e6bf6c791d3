"""Training configuration: typed, frozen, loaded by the same strict loader as the detector's."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from engine.loader import ConfigError, apply_overrides, from_dict, read_yaml_mapping
from models.action_model import ModelConfig
from models.heads import LossConfig, head_family
from models.postprocess import DecodeConfig


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """Where the data is and what it is.

    Attributes:
        kind: "videos" (mp4 files decoded through stream/ at the model's fps),
            "features" (one .npy of shape (T, C) per video, ActionFormer layout) or
            "signals" (one raw sensor recording per video: a (T_s, C_s) .npy or .csv at the
            annotation file's `fps` = its sampling rate, framed by the model's signal input).
        annotations: ActivityNet-style JSON (paths relative to the config file).
        root: folder of the videos (`<video_id>.mp4`) or the .npy features.
        file_ext: file name suffix after the video id (default ".mp4" for videos, ".npy"
            for features and signals).
        train_subset, val_subset: subsets of the JSON to train and evaluate on.
        feature_stride, num_frames: frames between two features and frames per feature
            (features only; feature i covers time (i * stride + num_frames / 2) / fps).
        cache_dir: where decoded frames and cached features are kept (None: no cache).
        val_annotations: validate on `val_subset` of this other annotation file instead, its
            videos beside it (e.g. a validation set of other scenes that `actstream tune`
            uses too); None: `annotations` holds both subsets.
    """

    kind: Literal["videos", "features", "signals"] = "videos"
    annotations: str = "data/synthetic/annotations.json"
    root: str = "data/synthetic"
    file_ext: str | None = None
    train_subset: str = "train"
    val_subset: str = "validation"
    feature_stride: int = 1
    num_frames: int = 1
    cache_dir: str | None = "runs/cache"
    val_annotations: str | None = None

    def __post_init__(self) -> None:
        if self.file_ext is None:
            object.__setattr__(self, "file_ext", ".mp4" if self.kind == "videos" else ".npy")

    def validation(self) -> DataConfig:
        """Where the validation videos are: this config, or `val_annotations` and its folder."""
        if self.val_annotations is None:
            return self
        return dataclasses.replace(
            self,
            annotations=self.val_annotations,
            root=str(Path(self.val_annotations).parent),
            val_annotations=None,
        )


@dataclass(frozen=True, kw_only=True)
class OptimConfig:
    """How any task trains (detection windows and FastBack clips alike).

    Attributes:
    mode: "end_to_end" trains backbone, temporal encoder and head on frames;
        "cached_features" runs the (frozen) backbone once over the videos and trains the
        temporal encoder and head on the cached features (fast on a CPU); with data.kind
        "features" only this mode applies (detection only).
    steps, batch_size: optimisation steps and windows (or clips) per step.
    lr, weight_decay, warmup_steps, min_lr: AdamW with linear warm-up then cosine decay.
    clip_grad_norm: gradient clipping (L2), None = off.
    ema_decay: decay of the exponential moving average of the weights (None = off); the
        checkpoint holds the EMA weights.
    amp: mixed precision on CUDA.
    eval_every, checkpoint_every: steps between validations and checkpoints.
    seed: data sampling and initialisation seed.
    device: "cpu", "cuda", ...
    checkpoint_dtype: precision of the weights in last.pt ("float16" halves its size).
    """

    mode: Literal["end_to_end", "cached_features"] = "end_to_end"
    steps: int = 2000
    batch_size: int = 4
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 100
    min_lr: float = 1e-6
    clip_grad_norm: float | None = 1.0
    ema_decay: float | None = 0.999
    amp: bool = True
    eval_every: int = 500
    checkpoint_every: int = 500
    seed: int = 0
    device: str = "cpu"
    checkpoint_dtype: Literal["float32", "float16"] = "float32"


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Everything `actstream train` needs.

    Attributes:
        out_dir: checkpoints, curves, logs.
        init_from: checkpoint whose weights training starts from (None: seeded random);
            its model config must equal `model`.
    """

    out_dir: str = "runs/train"
    init_from: str | None = None
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)

    def __post_init__(self) -> None:
        strides = head_family(self.model.head).point_strides(self.model.head)
        if strides is not None and len(self.loss.regression_ranges) != len(strides):
            raise ValueError(
                f"loss.regression_ranges has {len(self.loss.regression_ranges)} levels, "
                f"model.head.num_levels is {len(strides)}"
            )
        if self.data.kind == "features" and self.optim.mode != "cached_features":
            raise ValueError('data.kind "features" needs optim.mode "cached_features"')
        if (self.data.kind == "signals") != (self.model.input is not None):
            raise ValueError(
                'data.kind "signals" and model.input kind "signal" go together: a signal '
                "model trains on recordings, an image model on videos or features"
            )


def load_train_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Loads a training config; relative data paths are resolved against the current folder."""
    data = read_yaml_mapping(path)
    try:
        return from_dict(TrainConfig, apply_overrides(data, overrides))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
