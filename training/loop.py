"""One plain training loop for every task (detection windows, FastBack clips).

for each step: `batch = task.sample(rng)`, `out = task.forward(net, batch)` (under AMP on
CUDA), `losses = task.losses(out, batch)`, backward, clip, step, EMA; log; validate and
checkpoint every M steps. AMP, EMA and DDP (under `torchrun`) are switches of `OptimConfig`,
not subclasses. Checkpoints hold the EMA weights; `train_state.pt` beside them holds what
resuming needs (raw weights, optimizer, schedule, EMA, step, history).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from engine.checkpoint import atomic_save
from training.config import OptimConfig
from training.plots import plot_curves
from training.progress import Progress

logger = logging.getLogger(__name__)


class TrainingInterrupted(Exception):
    """Ctrl-C (SIGINT) during training: the steps done so far were saved for `--resume`."""

    def __init__(self, step: int, state_path: Path) -> None:
        super().__init__(f"interrupted after step {step}; {state_path} resumes it")
        self.step, self.state_path = step, state_path


class Task(Protocol):
    """What a training run optimises; the loop owns optimisation, EMA, AMP, DDP, progress,
    validation timing, checkpoints and resuming.

    Attributes:
        model: the module whose parameters train (EMA'd and checkpointed).
        net: its training view, called by `forward` (the loop may wrap it in DDP).
    """

    model: nn.Module
    net: nn.Module

    def sample(self, rng: np.random.Generator) -> Any:
        """One training batch."""
        ...

    def forward(self, net: nn.Module, batch: Any) -> Any:
        """The net's output on a batch (run under autocast on CUDA)."""
        ...

    def losses(self, out: Any, batch: Any) -> dict[str, torch.Tensor]:
        """{"total": ..., other named terms}; `out` may be half precision under AMP."""
        ...

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Validation metrics of a deployable model (e.g. {"map": ...}, {"top1": ...})."""
        ...

    def build(self) -> nn.Module:
        """A fresh model of the same config (the EMA weights are loaded into it)."""
        ...

    def save(self, path: Path, model: nn.Module, step: int) -> None:
        """Writes the deployable checkpoint of `model` after `step` steps."""
        ...


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


def init_distributed(device: str) -> tuple[DistInfo, str]:
    """DDP when launched by torchrun (WORLD_SIZE > 1): NCCL on CUDA, Gloo on CPU. Returns
    the process's rank and the device it trains on."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(), device
    import torch.distributed as dist

    dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    if device == "cuda":
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    return DistInfo(dist.get_rank(), dist.get_world_size()), device


def fit(
    task: Task,
    o: OptimConfig,
    out_dir: Path,
    *,
    device: str,
    dist_info: DistInfo | None = None,
    resume: bool = False,
    progress: bool = True,
) -> Path:
    """Trains `task` for `o.steps` steps; returns the final checkpoint (`out_dir/last.pt`).
    Ctrl-C saves the steps done (last.pt and train_state.pt) and raises
    `TrainingInterrupted`."""
    dist_info = dist_info or DistInfo()
    model = task.model
    if dist_info.world > 1:
        task.net = nn.parallel.DistributedDataParallel(
            task.net,
            device_ids=[device] if device.startswith("cuda") else None,
            find_unused_parameters=True,  # e.g. the empty lookahead bias without such heads
        )
    optimizer = torch.optim.AdamW(param_groups(model, o.weight_decay), lr=o.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: lr_factor(s, warmup=o.warmup_steps, total=o.steps, floor=o.min_lr / o.lr),
    )
    ema = Ema(model, o.ema_decay) if o.ema_decay else None
    use_amp = o.amp and device.startswith("cuda")
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    rng = np.random.default_rng(o.seed + 1000 * dist_info.rank)
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
        rng = np.random.default_rng(o.seed + 7919 * start + dist_info.rank)
        logger.info("resumed from %s at step %d", state_path, start)

    def deployable() -> nn.Module:
        if ema is None:
            return model
        shadow = task.build()
        shadow.load_state_dict(ema.state)
        return shadow.to(device)

    def save(step: int) -> None:
        if not dist_info.main:
            return
        task.save(out_dir / "last.pt", deployable(), step)
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

    def one_step(step: int) -> int:
        batch = task.sample(rng)
        with torch.autocast("cuda", dtype=torch.float16, enabled=use_amp):
            out = task.forward(task.net, batch)
        losses = task.losses(out, batch)
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
            metrics = task.evaluate(deployable().eval())
            history.append({"step": step + 1, **metrics})
            line = f"step {step + 1}: validation " + ", ".join(
                f"{k} {v:.3f}" for k, v in metrics.items()
            )
            if bar is not None:
                bar.note(line)  # the user sees how training goes, whatever --log-level says
            else:
                logger.info(line)
            task.net.train()
        if (step + 1) % o.checkpoint_every == 0 or last:
            save(step + 1)
        return step + 1

    bar = Progress(o.steps, start=start) if progress and dist_info.main else None
    task.net.train()
    t0 = time.monotonic()
    done = start  # steps whose every update (optimizer, schedule, EMA) is complete
    try:
        for step in range(start, o.steps):
            done = one_step(step)
    except KeyboardInterrupt:
        if dist_info.main:
            history[:] = [h for h in history if h["step"] <= done]
            save(done)  # what --resume continues from; a step in flight is done again
        raise TrainingInterrupted(done, state_path) from None
    if dist_info.world > 1:
        import torch.distributed as dist

        dist.destroy_process_group()
    logger.info("trained %d steps in %.0f s", o.steps - start, time.monotonic() - t0)
    return out_dir / "last.pt"
