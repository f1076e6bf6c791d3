"""`actstream train`: one plain training loop.

build → for each step: `losses = compute_losses(model(batch), targets)`, backward, clip, step,
EMA; log; validate and checkpoint every M steps. AMP (CUDA), EMA and DDP (under `torchrun`)
are switches, not subclasses. Checkpoints hold the EMA weights; `train_state.pt` beside them
holds what resuming needs (raw weights, optimizer, schedule, EMA, step).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from engine.backbones import build_action_model
from engine.checkpoint import CheckpointError, atomic_save, load_checkpoint, save_checkpoint
from engine.loader import config_to_dict
from models.action_model import ActionModel
from models.actionformer import HeadOutput
from models.backbone import previous_frames, to_images
from models.heads import head_family
from training.config import TrainConfig
from training.data import VideoItem, WindowSampler, load_videos
from training.evaluate import backbone_features, evaluate_offline
from training.plots import plot_curves
from training.progress import Progress

logger = logging.getLogger(__name__)


class WindowModel(nn.Module):
    """The training view of an `ActionModel`: (B, C + T, ...) inputs → head output for the
    last T steps. Frames are uint8 (B, L, H, W, 3); features are (B, L, C_f)."""

    def __init__(self, model: ActionModel, *, window: int, from_features: bool) -> None:
        super().__init__()
        self.model, self.window, self.from_features = model, window, from_features

    def forward(self, inputs: torch.Tensor, valid: torch.Tensor) -> HeadOutput:
        B, L = inputs.shape[:2]
        if self.from_features:
            feats = inputs.float()
        else:
            prev = previous_frames(inputs, valid)
            x = to_images(inputs.flatten(0, 1))  # (B·L, 3, H, W)
            feats = self.model.backbone(x, to_images(prev.flatten(0, 1))).view(B, L, -1)
        h = self.model.temporal(feats, valid)[:, -self.window :]  # (B, T, C)
        return self.model.head(h, valid[:, -self.window :])


def context_frames(model: ActionModel) -> int:
    """Frames before the head's window that the temporal encoder needs to be warmed up."""
    return model.temporal.config.past_frames


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on conv and linear weights only (not biases, norms, position biases)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        is_table = name.endswith(("bias_back", "bias_ahead", "reg_scales"))
        (decay if p.ndim >= 2 and not is_table else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def lr_factor(step: int, *, warmup: int, total: int, floor: float) -> float:
    """Linear warm-up to 1, then cosine decay to `floor`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


class Ema:
    """Exponential moving average of every float tensor of a state dict."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))  # short memory early in training
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.state[k].mul_(d).add_(v.detach(), alpha=1 - d)
            else:
                self.state[k].copy_(v)


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> DistInfo:
    """DDP when launched by torchrun (WORLD_SIZE > 1): NCCL on CUDA, Gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    import torch.distributed as dist

    dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size())


def cache_backbone_features(
    model: ActionModel, videos: list[VideoItem], device: str
) -> list[VideoItem]:
    """Runs the (frozen) backbone once over every video: frames become features."""
    model.backbone.eval()
    return [
        VideoItem(
            v.video_id,
            backbone_features(model, v.data, device).cpu().numpy(),
            v.offset_s,
            v.step_s,
            v.bounds,
            v.labels,
            v.annotation,
        )
        for v in videos
    ]


def train(
    config: TrainConfig,
    *,
    resume: bool = False,
    init_from: str | None = None,
    progress: bool = True,
) -> Path:
    """Trains and returns the path of the final checkpoint (`out_dir/last.pt`)."""
    o = config.optim
    dist_info = init_distributed(o.device)
    device = (
        f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        if o.device == "cuda" and dist_info.world > 1
        else o.device
    )
    torch.manual_seed(o.seed + dist_info.rank)
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(json.dumps(config_to_dict(config), indent=1, default=str))

    init_from = init_from or config.init_from
    if init_from:
        model, init_config, _ = load_checkpoint(init_from)
        if init_config != config.model:
            if dataclasses.replace(init_config, head=config.model.head) != config.model:
                raise CheckpointError(
                    f"{init_from}: its model config differs from this config's model (only the "
                    "head may differ: then the backbone and temporal encoder are taken)"
                )
            source, model = model, build_action_model(config.model)
            model.backbone.load_state_dict(source.backbone.state_dict())
            model.temporal.load_state_dict(source.temporal.state_dict())
            logger.info(
                "backbone and temporal encoder from %s; new %s head",
                init_from,
                config.model.head.type,
            )
    else:
        model = build_action_model(config.model)
    model.to(device)
    m = config.model
    from_features = o.mode == "cached_features"
    (train_videos, classes), (val_videos, _) = (
        load_videos(
            config.data, subset, fps=m.fps, image_size=m.backbone.image_size, classes=m.classes
        )
        for subset in (config.data.train_subset, config.data.val_subset)
    )
    if from_features and config.data.kind == "videos":
        train_videos = cache_backbone_features(model, train_videos, device)
        val_videos = cache_backbone_features(model, val_videos, device)
        for p in model.backbone.parameters():
            p.requires_grad_(False)
    sampler = WindowSampler(
        train_videos,
        window=m.head.window_frames,
        context=context_frames(model),
        strides=head_family(m.head).point_strides(m.head),
        regression_ranges=o.regression_ranges,
        num_classes=len(classes),
        center_radius=o.center_radius,
        seed=o.seed + 1000 * dist_info.rank,
    )
    net: nn.Module = WindowModel(model, window=m.head.window_frames, from_features=from_features)
    if dist_info.world > 1:
        net = nn.parallel.DistributedDataParallel(
            net,
            device_ids=[device] if device.startswith("cuda") else None,
            find_unused_parameters=True,  # the empty lookahead bias when there are no such heads
        )
    optimizer = torch.optim.AdamW(param_groups(model, o.weight_decay), lr=o.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: lr_factor(s, warmup=o.warmup_steps, total=o.steps, floor=o.min_lr / o.lr),
    )
    ema = Ema(model, o.ema_decay) if o.ema_decay else None
    use_amp = o.amp and device.startswith("cuda")
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    history: list[dict] = []
    start = 0
    state_path = out_dir / "train_state.pt"
    if resume and state_path.exists():
        state = torch.load(state_path, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        if ema is not None and state.get("ema") is not None:
            ema.state = state["ema"]
        history = json.loads(state["history"])
        start = int(state["step"])
        sampler.rng = np.random.default_rng(o.seed + 7919 * start + dist_info.rank)
        logger.info("resumed from %s at step %d", state_path, start)

    def deployable() -> ActionModel:
        if ema is None:
            return model
        shadow = build_action_model(config.model)
        shadow.load_state_dict(ema.state)
        return shadow

    def save(step: int) -> None:
        if not dist_info.main:
            return
        save_checkpoint(
            out_dir / "last.pt",
            deployable(),
            config.model,
            step=step,
            weights_dtype=getattr(torch, o.checkpoint_dtype),
        )
        atomic_save(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(),
                "ema": ema.state if ema else None,
                "step": step,
                "history": json.dumps(history),
            },
            state_path,
        )
        plot_curves(history, out_dir / "curves.png")

    bar = Progress(o.steps, start=start) if progress and dist_info.main else None
    net.train()
    t0 = time.monotonic()
    for step in range(start, o.steps):
        batch = sampler.sample(o.batch_size)
        with torch.autocast("cuda", dtype=torch.float16, enabled=use_amp):
            out = net(batch.inputs.to(device), batch.valid.to(device))
        out = type(out)(*(t.float() if t.is_floating_point() else t for t in out))  # AMP
        losses = head_family(m.head).losses(out, batch.to(device), o)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(losses["total"]).backward()
        if o.clip_grad_norm is not None:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), o.clip_grad_norm)
        scaler.step(optimizer)
        scaler.update()
        schedule.step()
        if ema is not None:
            ema.update(model, step)
        record = {"step": step + 1, "loss": losses["total"].item()}
        record.update({k: v.item() for k, v in losses.items() if k != "total"})
        record["lr"] = optimizer.param_groups[0]["lr"]
        if not math.isfinite(record["loss"]):
            raise FloatingPointError(f"loss is {record['loss']} at step {step + 1}; lower optim.lr")
        history.append(record)
        if bar is not None:
            bar.update(step + 1, **{k: v for k, v in record.items() if k != "step"})
        last = step + 1 == o.steps
        if dist_info.main and ((step + 1) % o.eval_every == 0 or last):
            result = evaluate_offline(
                deployable().to(device).eval(),
                val_videos,
                classes,
                config.decode,
                from_features=from_features,
                device=device,
            )
            history.append({"step": step + 1, "map": result.average_map})
            logger.info("step %d: validation mAP %.3f", step + 1, result.average_map)
            model.train()
        if (step + 1) % o.checkpoint_every == 0 or last:
            save(step + 1)
    if dist_info.world > 1:
        import torch.distributed as dist

        dist.destroy_process_group()
    logger.info("trained %d steps in %.0f s", o.steps - start, time.monotonic() - t0)
    return out_dir / "last.pt"
