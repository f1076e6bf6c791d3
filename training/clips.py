"""Clip-level action recognition with FastBack and CLS pooling: trimmed synthetic clips,
`actstream train` (configs with `task: clips`) and `actstream eval` (top-1 accuracy).

A clip dataset is a folder of mp4 files, one action each, from its first frame to its last,
plus `annotations.json` in the ActivityNet layout (one segment per clip, its label).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from engine.backbones import load_backbone
from engine.checkpoint import CheckpointError, build_from_payload, read_payload, save_checkpoint
from engine.loader import ConfigError, apply_overrides, config_to_dict, from_dict
from models.action_model import DEFAULT_CLASSES
from models.fastback_clip import ClipClassifier, FastBackConfig
from stream.synthetic import SyntheticScene
from training.annotations import VideoAnnotation, load_annotations, write_annotations
from training.config import OptimConfig
from training.data import decoded_frames
from training.loop import fit
from training.synth import SplitStreams, split_plan, write_video

TASK = "clips"


def write_clip_dataset(
    out_dir: str | Path,
    *,
    clips: int,
    seed: int = 0,
    fps: int = 10,
    size: int = 64,
    classes: tuple[str, ...] = DEFAULT_CLASSES,
    split: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Writes `clips` trimmed clips (classes in turn, each clip exactly one action of one
    actor, with distractors) and `annotations.json`; returns the JSON path. Scenes and
    `split` as in `training.synth.write_synthetic_dataset`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    streams = SplitStreams(seed)
    annotations = []
    for i, (subset, k) in enumerate(split_plan(clips, split)):
        rng = streams[subset]
        label = classes[k % len(classes)]
        scene = SyntheticScene(
            seed=rng.getrandbits(31),
            width=size,
            height=size,
            num_actors=1,
            num_distractors=rng.choice((0, 1, 2)),
            classes=(label,),
            duration_s=30.0,
        )
        action = scene.segments(30.0)[0]
        duration = round((action.end_s - action.start_s) * fps) / fps
        cid = streams.item_id("clip", subset, k)
        write_video(
            out / f"{cid}.mp4", _Shifted(scene, action.start_s), duration_s=duration, fps=fps
        )
        annotations.append(
            VideoAnnotation(cid, subset, duration, float(fps), ((0.0, duration),), (label,))
        )
        if progress is not None:
            progress(i + 1, clips)
    path = out / "annotations.json"
    write_annotations(path, annotations, classes)
    return path


class _Shifted:
    """A scene seen from `start_s` on (what `write_video` renders from time 0)."""

    def __init__(self, scene: SyntheticScene, start_s: float) -> None:
        self.scene, self.start_s = scene, start_s
        self.width, self.height = scene.width, scene.height

    def render(self, t_s: float) -> np.ndarray:
        return self.scene.render(self.start_s + t_s)


@dataclass(frozen=True, kw_only=True)
class ClipModelConfig:
    """Attributes: classes; fps clips are sampled at; seed of the initialisation;
    max_frames: longer clips are cut to this many frames around their middle;
    fastback: the network."""

    classes: tuple[str, ...] = DEFAULT_CLASSES
    fps: float = 10.0
    seed: int = 0
    max_frames: int = 32
    fastback: FastBackConfig = field(default_factory=FastBackConfig)


@dataclass(frozen=True, kw_only=True)
class ClipTrainConfig:
    """`actstream train` config for clip recognition (`task: clips`)."""

    task: Literal["clips"] = TASK
    out_dir: str = "runs/clips"
    model: ClipModelConfig = field(default_factory=ClipModelConfig)
    root: str = "data/clips"
    train_subset: str = "train"
    val_subset: str = "validation"
    cache_dir: str | None = "runs/cache"
    optim: OptimConfig = field(default_factory=OptimConfig)


def load_clip_config(data: dict, overrides: list[str] | tuple[str, ...] = ()) -> ClipTrainConfig:
    return from_dict(ClipTrainConfig, apply_overrides(data, overrides))


@dataclass
class ClipSet:
    """Clips as (N, T_max, H, W, 3) uint8 with a valid mask (N, T_max) and labels (N,)."""

    ids: list[str]
    frames: torch.Tensor
    valid: torch.Tensor
    labels: torch.Tensor


def load_clips(
    root: str | Path, subset: str, model: ClipModelConfig, cache_dir: str | None = None
) -> ClipSet:
    root = Path(root)
    anns, _ = load_annotations(root / "annotations.json")
    index = {c: i for i, c in enumerate(model.classes)}
    chosen = [a for a in anns if a.subset == subset and a.labels and a.labels[0] in index]
    if not chosen:
        raise ValueError(f"{root / 'annotations.json'}: no clips of known classes in {subset!r}")
    T, size = model.max_frames, model.fastback.image_size
    frames = torch.zeros(len(chosen), T, size, size, 3, dtype=torch.uint8)
    valid = torch.zeros(len(chosen), T, dtype=torch.bool)
    for i, a in enumerate(chosen):
        x = decoded_frames(root / f"{a.video_id}.mp4", cache_dir, fps=model.fps, size=size)
        lo = max(0, (len(x) - T) // 2)
        x = torch.from_numpy(x[lo : lo + T])
        frames[i, T - len(x) :] = x  # padded at the front, as a young stream is
        valid[i, T - len(x) :] = True
    labels = torch.tensor([index[a.labels[0]] for a in chosen])
    return ClipSet([a.video_id for a in chosen], frames, valid, labels)


@torch.inference_mode()
def predict(model: ClipClassifier, clips: ClipSet, device: str, batch: int = 32) -> torch.Tensor:
    model.eval()
    out = [
        model(clips.frames[i : i + batch].to(device), clips.valid[i : i + batch].to(device))
        for i in range(0, len(clips.labels), batch)
    ]
    return torch.cat(out).argmax(-1).cpu()


def accuracy_report(pred: torch.Tensor, clips: ClipSet, classes: tuple[str, ...]) -> dict:
    correct = pred == clips.labels
    per_class = {
        c: float(correct[clips.labels == k].float().mean())
        for k, c in enumerate(classes)
        if (clips.labels == k).any()
    }
    confusion = np.zeros((len(classes), len(classes)), int)
    for t, p in zip(clips.labels.tolist(), pred.tolist(), strict=True):
        confusion[t, p] += 1
    return {
        "top1": float(correct.float().mean()),
        "clips": len(pred),
        "per_class_top1": per_class,
        "confusion": confusion.tolist(),
    }


def load_clip_checkpoint(path: str | Path, device: str = "cpu", payload: dict | None = None):
    payload = read_payload(path, device) if payload is None else payload
    if payload.get("task") != TASK:
        raise CheckpointError(f"{path}: not a clip-recognition checkpoint")
    return build_from_payload(
        path,
        payload,
        ClipModelConfig,
        lambda c: ClipClassifier(c.fastback, len(c.classes), load_backbone),
        device,
    )


class ClipTask:
    """Trimmed clips (mirrored half of the time) → FastBack's CLS logits → cross-entropy;
    validation is top-1 accuracy on the validation clips."""

    def __init__(self, config: ClipTrainConfig, device: str) -> None:
        self.config, self.device, m = config, device, config.model
        self.train_set = load_clips(config.root, config.train_subset, m, config.cache_dir)
        self.val_set = load_clips(config.root, config.val_subset, m, config.cache_dir)
        self.model = self.net = self.build().to(device)

    def sample(self, rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
        idx = torch.from_numpy(rng.choice(len(self.train_set.labels), self.config.optim.batch_size))
        frames, valid = self.train_set.frames[idx], self.train_set.valid[idx]
        if rng.random() < 0.5:  # mirrored clips show the same actions
            frames = frames.flip(3)
        return frames, valid, self.train_set.labels[idx]

    def forward(self, net: torch.nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return net(batch[0].to(self.device), batch[1].to(self.device))

    def losses(self, out: torch.Tensor, batch: tuple[torch.Tensor, ...]):
        return {"total": F.cross_entropy(out.float(), batch[2].to(self.device))}

    def evaluate(self, model: torch.nn.Module) -> dict[str, float]:
        pred = predict(model, self.val_set, self.device)
        return {"top1": accuracy_report(pred, self.val_set, self.config.model.classes)["top1"]}

    def build(self) -> ClipClassifier:
        m = self.config.model
        return ClipClassifier(m.fastback, len(m.classes), load_backbone)

    def save(self, path: Path, model: torch.nn.Module, step: int) -> None:
        dtype = getattr(torch, self.config.optim.checkpoint_dtype)
        save_checkpoint(path, model, self.config.model, step=step, weights_dtype=dtype, task=TASK)


def train_clips(config: ClipTrainConfig, *, resume: bool = False, progress: bool = True) -> Path:
    """Trains FastBack + CLS pooling on trimmed clips; returns OUT_DIR/last.pt."""
    if config.optim.mode != "end_to_end":
        raise ConfigError('task "clips" trains end to end: optim.mode must be "end_to_end"')
    torch.manual_seed(config.model.seed)
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(json.dumps(config_to_dict(config), indent=1))
    device = config.optim.device
    task = ClipTask(config, device)
    return fit(task, config.optim, out_dir, device=device, resume=resume, progress=progress)


def evaluate_clips(
    checkpoint: str, data: str, subset: str, out: Path, payload: dict | None = None
) -> dict:
    model, config, step = load_clip_checkpoint(checkpoint, payload=payload)
    root = Path(data).parent if Path(data).is_file() else Path(data)
    clips = load_clips(root, subset, config)
    report = accuracy_report(predict(model, clips, "cpu"), clips, config.classes)
    report.update(checkpoint=checkpoint, step=step, subset=subset)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(report, indent=1))
    return report
