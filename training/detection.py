"""`actstream train` for detection: random windows of annotated videos (or feature sets)
through an `ActionModel`, its head family's losses, validation mAP — run by `training.loop`."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from engine.backbones import build_action_model
from engine.build import signal_framing
from engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from engine.loader import config_to_dict
from models.action_model import ActionModel
from models.backbone import previous_frames, to_images
from models.heads import head_family
from training.config import TrainConfig
from training.data import Batch, VideoItem, WindowSampler, load_videos
from training.evaluate import backbone_features, evaluate_offline
from training.loop import fit, init_distributed
from training.progress import Progress

logger = logging.getLogger(__name__)


class WindowModel(nn.Module):
    """The training view of an `ActionModel`: (B, C + T, ...) inputs → head output for the
    last T steps. Frames are uint8 (B, L, H, W, 3), signal frames float (B, L, W + 1, C_s);
    features are (B, L, C_f)."""

    def __init__(self, model: ActionModel, *, window: int, from_features: bool) -> None:
        super().__init__()
        self.model, self.window, self.from_features = model, window, from_features

    def forward(self, inputs: torch.Tensor, valid: torch.Tensor):
        B, L = inputs.shape[:2]
        if self.from_features:
            feats = inputs.float()
        elif inputs.is_floating_point():  # signal frames
            feats = self.model.backbone(inputs.flatten(0, 1)).view(B, L, -1)
        else:
            prev = previous_frames(inputs, valid)
            x = to_images(inputs.flatten(0, 1))  # (B·L, 3, H, W)
            feats = self.model.backbone(x, to_images(prev.flatten(0, 1))).view(B, L, -1)
        h = self.model.temporal(feats, valid)[:, -self.window :]  # (B, T, C)
        return self.model.head(h, valid[:, -self.window :])


def context_frames(model: ActionModel) -> int:
    """Frames before the head's window that the temporal encoder needs to be warmed up."""
    return model.temporal.config.past_frames


def _progress(label: str):
    """A progress callback (done, total) that prints a line every 10 items off a terminal."""
    bar: list[Progress] = []  # made on the first call, when the total is known

    def update(done: int, total: int) -> None:
        if not bar:
            bar.append(Progress(total, every=10, label=label))
        bar[0].update(done)

    return update


def frozen_features(model: ActionModel, device: str):
    """The backbone in eval mode as a function: one video's frames → its (T, C_f) features."""
    model.backbone.eval()
    return lambda data: backbone_features(model, data, device).cpu().numpy()


def cache_backbone_features(
    model: ActionModel, videos: list[VideoItem], device: str, progress=None
) -> list[VideoItem]:
    """Runs the (frozen) backbone once over every video: frames become features;
    `progress(done, total)` after each."""
    features = frozen_features(model, device)
    out = []
    for v in videos:
        out.append(dataclasses.replace(v, data=features(v.data)))
        if progress is not None:
            progress(len(out), len(videos))
    return out


def signal_statistics(videos: list[VideoItem], hop: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std (C_s,) of the samples of signal recordings (each frame's own
    hop: every sample once)."""
    samples = np.concatenate([v.data[:, -hop:].reshape(-1, v.data.shape[-1]) for v in videos])
    return torch.from_numpy(samples.mean(0)), torch.from_numpy(samples.std(0))


class DetectionTask:
    """Windows ending anywhere in a video (as a stream sees them) → the head family's losses;
    validation is offline mAP over the validation subset."""

    def __init__(
        self, config: TrainConfig, model: ActionModel, device: str, *, fresh: bool = True
    ) -> None:
        """`fresh`: the model starts from random weights (a signal model then takes its
        normalisation statistics from the training recordings)."""
        self.config, self.model, self.device = config, model, device
        m, loss = config.model, config.loss
        self.from_features = config.optim.mode == "cached_features"
        what = "recordings" if config.data.kind == "signals" else "videos"
        # Decoded frames are large (1260 one-minute videos at 64²: 9 GB): each video's frames
        # become backbone features as soon as it is decoded. Signal recordings are small and
        # a fresh model's normalisation needs them all first: they are cached after loading.
        on_load = (
            frozen_features(model, device)
            if (self.from_features and config.data.kind == "videos")
            else None
        )
        if on_load:
            what += " (to backbone features)"
        (train_videos, self.classes), (self.val_videos, _) = (
            load_videos(
                data,
                subset,
                fps=m.fps,
                image_size=m.backbone.image_size,
                classes=m.classes,
                progress=_progress(f"loading {subset} {what}"),
                framing=signal_framing(m),
                feature_dim=m.feature_dim,
                transform=on_load,
            )
            for data, subset in (
                (config.data, config.data.train_subset),
                (config.data.validation(), config.data.val_subset),
            )
        )
        if fresh and m.input is not None and m.input.normalise:
            mean, std = signal_statistics(train_videos, m.input.hop_samples)
            model.backbone.set_statistics(mean.to(device), std.to(device))
            logger.info(
                "signal normalisation from the training recordings (%d channels): mean "
                "%.3g..%.3g, std %.3g..%.3g",
                len(mean),
                float(mean.min()),
                float(mean.max()),
                float(std.min()),
                float(std.max()),
            )
        if self.from_features and config.data.kind == "signals":
            train_videos = cache_backbone_features(
                model, train_videos, device, _progress("backbone features (train)")
            )
            self.val_videos = cache_backbone_features(
                model, self.val_videos, device, _progress("backbone features (validation)")
            )
        if self.from_features and config.data.kind != "features":
            for p in model.backbone.parameters():
                p.requires_grad_(False)
        self.trained_on = {
            "annotations": config.data.annotations,
            "subset": config.data.train_subset,
            "videos": sorted(v.video_id for v in train_videos),
        }
        if config.data.kind == "features":  # how the features sit on the time grid
            self.trained_on["feature_stride"] = config.data.feature_stride
            self.trained_on["num_frames"] = config.data.num_frames
        self.sampler = WindowSampler(
            train_videos,
            window=m.head.window_frames,
            context=context_frames(model),
            strides=head_family(m.head).point_strides(m.head),
            regression_ranges=loss.regression_ranges,
            num_classes=len(self.classes),
            center_radius=loss.center_radius,
            onset_windows=loss.onset_windows,
            onset_span_frames=loss.onset_span_frames,
        )
        self.net: nn.Module = WindowModel(
            model, window=m.head.window_frames, from_features=self.from_features
        )

    def sample(self, rng: np.random.Generator) -> Batch:
        return self.sampler.sample(self.config.optim.batch_size, rng).to(self.device)

    def forward(self, net: nn.Module, batch: Batch):
        return net(batch.inputs.to(self.device), batch.valid.to(self.device))

    def losses(self, out, batch: Batch) -> dict[str, torch.Tensor]:
        out = type(out)(  # AMP
            *(t.float() if t is not None and t.is_floating_point() else t for t in out)
        )
        return head_family(self.config.model.head).losses(out, batch, self.config.loss)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        result = evaluate_offline(
            model,
            self.val_videos,
            self.classes,
            self.config.decode,
            from_features=self.from_features,
            device=self.device,
        )
        return {"map": result.average_map}

    def build(self) -> ActionModel:
        return build_action_model(self.config.model)

    def save(self, path: Path, model: nn.Module, step: int) -> None:
        dtype = getattr(torch, self.config.optim.checkpoint_dtype)
        save_checkpoint(
            path,
            model,
            self.config.model,
            step=step,
            weights_dtype=dtype,
            trained_on=self.trained_on,
        )


def initial_model(config: TrainConfig, init_from: str | None) -> ActionModel:
    """Seeded random weights, or a checkpoint's; a checkpoint with another head gives its
    backbone and temporal encoder to a new head."""
    if not init_from:
        return build_action_model(config.model)
    model, init_config, _ = load_checkpoint(init_from)
    if init_config == config.model:
        return model
    if dataclasses.replace(init_config, head=config.model.head) != config.model:
        raise CheckpointError(
            f"{init_from}: its model config differs from this config's model (only the "
            "head may differ: then the backbone and temporal encoder are taken)"
        )
    source, model = model, build_action_model(config.model)
    model.backbone.load_state_dict(source.backbone.state_dict())
    model.temporal.load_state_dict(source.temporal.state_dict())
    logger.info(
        "backbone and temporal encoder from %s; new %s head", init_from, config.model.head.type
    )
    return model


def train(
    config: TrainConfig,
    *,
    resume: bool = False,
    init_from: str | None = None,
    progress: bool = True,
) -> Path:
    """Trains and returns the path of the final checkpoint (`out_dir/last.pt`)."""
    o = config.optim
    dist_info, device = init_distributed(o.device)
    torch.manual_seed(o.seed + dist_info.rank)
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(json.dumps(config_to_dict(config), indent=1, default=str))
    init = init_from or config.init_from
    model = initial_model(config, init).to(device)
    task = DetectionTask(config, model, device, fresh=not init and not resume)
    return fit(
        task, o, out_dir, device=device, dist_info=dist_info, resume=resume, progress=progress
    )
