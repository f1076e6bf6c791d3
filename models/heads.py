"""The model-family seam: one table saying, per head family, how the head is built, what its
exported graph returns, how its raw outputs become segments, and how it is trained.

Everything that differs between ActionFormer (scored segments from points) and FAFormer
(labels per frame) is an entry of `HEADS`; the detector, the backends, the exporter, training
and evaluation look a family up by `config.type` and never test for a head's type.
Segments are `(start, end, class, score)` on the frame grid of what the head saw.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from models.actionformer import ActionFormerHead, HeadConfig, HeadOutput, make_points, point_valid
from models.faformer import FAFormerConfig, FAFormerHead, FrameLabels
from models.losses import compute_losses
from models.postprocess import DecodeConfig, decode_segments, frame_runs, soft_nms
from models.seg_losses import faformer_losses

FrameSegment = tuple[float, float, int, float]  # start, end (frames), class index, score
HeadConfigs = HeadConfig | FAFormerConfig


@dataclass(frozen=True, kw_only=True)
class LossConfig:
    """Training targets and loss weights (the `loss:` section of a training config).

    Attributes:
        reg_weight: weight of ActionFormer's DIoU loss against its focal loss.
        smooth_weight, token_weight: weights of FAFormer's temporal smoothing loss and of its
            action-token losses against the per-frame classification loss.
        center_radius: ActionFormer's centre-sampling radius, in strides.
        regression_ranges: per pyramid level, the [lo, hi] reach (frames) of its positives.
        onset_windows: share of training windows that end shortly after an action has begun
            (1 to `onset_span_frames` frames into it): a stream decides an onset on exactly
            such windows, which windows ending anywhere rarely show (0: every window ends
            anywhere in the video).
        onset_span_frames: how far into the action those windows end, at most.
    """

    reg_weight: float = 1.0
    smooth_weight: float = 0.15
    token_weight: float = 1.0
    center_radius: float = 1.5
    regression_ranges: tuple[tuple[float, float], ...] = (
        (0.0, 8.0),
        (8.0, 16.0),
        (16.0, 32.0),
        (32.0, math.inf),
    )
    onset_windows: float = 0.0
    onset_span_frames: int = 30

    def __post_init__(self) -> None:
        if not 0.0 <= self.onset_windows <= 1.0:
            raise ValueError(f"onset_windows must be in [0, 1], got {self.onset_windows}")
        if self.onset_span_frames < 1:
            raise ValueError(f"onset_span_frames must be >= 1, got {self.onset_span_frames}")


@dataclass(frozen=True, kw_only=True)
class HeadFamily:
    """One head family.

    Attributes:
        build: (config, in_dim=, num_classes=) → the head module.
        output_names: the head graph's outputs, in order (fields of the head's output).
        output_shapes: (config, K) → each output's shape without the batch axis.
        point_strides: (config) → the pyramid strides of its points, or None for a head
            without points (no point targets are made for it).
        wrap: (config, graph outputs, valid (B, T)) → the head's output type.
        window_segments: (config, output, i, decode, stop_below) → segments of window i.
        video_segments: (head, features (T_v, C), decode) → segments of a whole video.
        frame_probs: (head, features (T_v, C)) → (T_v, K) per-frame probabilities, for a
            frame-labelling head (None: the family labels no frames).
        losses: (output, batch, loss) → {"total", ...}; `batch` carries `targets`,
            `frame_labels` and `segments` (training.data.Batch), `loss` a `LossConfig`.
    """

    build: Callable[..., nn.Module]
    output_names: tuple[str, ...]
    output_shapes: Callable[[Any, int], tuple[tuple[int, ...], ...]]
    point_strides: Callable[[Any], tuple[int, ...] | None]
    wrap: Callable[[Any, tuple[torch.Tensor, ...], torch.Tensor], Any]
    window_segments: Callable[..., list[FrameSegment]]
    video_segments: Callable[..., list[FrameSegment]]
    frame_probs: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None
    losses: Callable[..., dict[str, torch.Tensor]]


# ---- ActionFormer: points classify themselves and regress their action's bounds -----------
@functools.lru_cache(maxsize=16)
def _points(window_frames: int, strides: tuple[int, ...]) -> torch.Tensor:
    return make_points(window_frames, strides)


def _af_shapes(config: HeadConfig, num_classes: int) -> tuple[tuple[int, ...], ...]:
    points = sum(config.window_frames // s for s in config.strides)
    return (points, num_classes), (points, 2)


def _af_wrap(config: HeadConfig, outs: tuple[torch.Tensor, ...], valid: torch.Tensor):
    return HeadOutput(outs[0], outs[1], point_valid(valid, config.strides))


def _af_decode(
    out: HeadOutput,
    i: int,
    points: torch.Tensor,
    frames: int,
    d: DecodeConfig,
    *,
    scale: int,
    min_score: float,
) -> list[FrameSegment]:
    candidates = decode_segments(
        out.cls_logits[i],
        out.offsets[i],
        points,
        out.valid[i],
        pre_nms_threshold=d.pre_nms_threshold,
        pre_nms_topk=d.pre_nms_topk * scale,
        min_duration=d.min_duration_frames,
        window_frames=frames,
    )
    kept = soft_nms(
        candidates, sigma=d.nms_sigma, min_score=min_score, max_segments=d.max_segments * scale
    )
    return [
        (float(b[0]), float(b[1]), int(label), float(score))
        for b, score, label in zip(kept.bounds, kept.scores, kept.labels, strict=True)
    ]


def _af_window_segments(
    config: HeadConfig, out: HeadOutput, i: int, decode: DecodeConfig, stop_below: float = 0.0
) -> list[FrameSegment]:
    """`stop_below`: soft-NMS stops once no segment scores this much (a consumer's threshold:
    the stronger segments are unchanged)."""
    T = config.window_frames
    points = _points(T, config.strides)
    return _af_decode(
        out, i, points, T, decode, scale=1, min_score=max(decode.min_score, stop_below)
    )


def _af_video_segments(
    head: ActionFormerHead, h: torch.Tensor, decode: DecodeConfig
) -> list[FrameSegment]:
    """The head is local (convolutions, windowed attention): as in ActionFormer's offline
    inference it runs once over the whole video, padded to a multiple of its coarsest
    stride, with the candidate budget scaled by the number of windows it spans."""
    n = len(h)
    strides = head.config.strides
    T = -(-n // strides[-1]) * strides[-1]
    window = torch.zeros(T, h.shape[1], device=h.device)
    window[:n] = h
    valid = torch.arange(T, device=h.device) < n
    out = head(window[None], valid[None])
    out = HeadOutput(*(t.cpu() for t in out))
    scale = max(1, T // head.config.window_frames)
    return _af_decode(
        out, 0, make_points(T, strides), n, decode, scale=scale, min_score=decode.min_score
    )


def _af_losses(out: HeadOutput, batch, loss: LossConfig) -> dict[str, torch.Tensor]:
    return compute_losses(out, batch.targets, reg_weight=loss.reg_weight)


# ---- FAFormer: labels per frame, read as runs ------------------------------------------------
def _fa_wrap(config: FAFormerConfig, outs: tuple[torch.Tensor, ...], valid: torch.Tensor):
    return FrameLabels(outs[0], None, None, valid)


def _fa_window_segments(
    config: FAFormerConfig, out: FrameLabels, i: int, decode: DecodeConfig, stop_below=0.0
) -> list[FrameSegment]:
    return frame_runs(out.frame_logits[i].sigmoid(), out.valid[i], decode)


def _fa_frame_probs(head: FAFormerHead, h: torch.Tensor) -> torch.Tensor:
    """(T_v, K) per-frame probabilities over a whole video: its windows (hop T / 2; the first
    padded at the front, as a young stream's) averaged where they overlap. Its action tokens
    attend to the whole window, so unlike ActionFormer's local head it runs window by window."""
    n, T = len(h), head.window_frames
    hop = max(1, T // 2)
    total = torch.zeros(n, head.num_classes, device=h.device)
    count = torch.zeros(n, 1, device=h.device)
    ends = list(range(min(n, hop), n + 1, hop))
    if ends[-1] != n:
        ends.append(n)
    for end in ends:
        lo = max(0, end - T)
        window = torch.zeros(T, h.shape[1], device=h.device)
        window[T - (end - lo) :] = h[lo:end]
        valid = torch.arange(T, device=h.device) >= T - (end - lo)
        probs = head(window[None], valid[None]).frame_logits[0].sigmoid()
        total[lo:end] += probs[T - (end - lo) :]
        count[lo:end] += 1
    return (total / count.clamp(min=1)).cpu()


def _fa_video_segments(
    head: FAFormerHead, h: torch.Tensor, decode: DecodeConfig
) -> list[FrameSegment]:
    probs = _fa_frame_probs(head, h)
    return frame_runs(probs, torch.ones(len(probs), dtype=torch.bool), decode)


def _fa_losses(out: FrameLabels, batch, loss: LossConfig) -> dict[str, torch.Tensor]:
    return faformer_losses(
        out,
        batch.frame_labels,
        batch.segments,
        smooth_weight=loss.smooth_weight,
        token_weight=loss.token_weight,
    )


HEADS: dict[str, HeadFamily] = {
    "actionformer": HeadFamily(
        build=ActionFormerHead,
        output_names=("cls_logits", "offsets"),
        output_shapes=_af_shapes,
        point_strides=lambda c: c.strides,
        wrap=_af_wrap,
        window_segments=_af_window_segments,
        video_segments=_af_video_segments,
        frame_probs=None,
        losses=_af_losses,
    ),
    "faformer": HeadFamily(
        build=FAFormerHead,
        output_names=("frame_logits",),
        output_shapes=lambda c, k: ((c.window_frames, k),),
        point_strides=lambda c: None,
        wrap=_fa_wrap,
        window_segments=_fa_window_segments,
        video_segments=_fa_video_segments,
        frame_probs=_fa_frame_probs,
        losses=_fa_losses,
    ),
}


def head_family(config: HeadConfigs) -> HeadFamily:
    """The family of a head config (by its `type`)."""
    return HEADS[config.type]


def build_head(config: HeadConfigs, *, in_dim: int, num_classes: int) -> nn.Module:
    return head_family(config).build(config, in_dim=in_dim, num_classes=num_classes)


def graph_outputs(config: HeadConfigs, out: Any) -> tuple[torch.Tensor, ...]:
    """A head's output as its graph's tensors (`output_names`, in order)."""
    return tuple(getattr(out, name) for name in head_family(config).output_names)
