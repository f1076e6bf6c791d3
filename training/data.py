"""Datasets: whole videos as frame or feature arrays on a time grid, and the random windows
(with targets) that training draws from them."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models.actionformer import make_points
from models.targets import Targets, make_targets, point_ranges
from stream.frame_sources import decode_file
from stream.settings import ReaderOptions, StreamConfig
from stream.signals import SignalFraming, load_signal, signal_frames
from stream.sources import parse_source
from training.annotations import VideoAnnotation, load_annotations
from training.config import DataConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoItem:
    """One video on its time grid: element i of `data` is at time offset_s + i * step_s.

    data: (T, H, W, 3) uint8 frames or (T, C) float32 features.
    bounds: (N, 2) ground-truth actions in grid units; labels: (N,) class indices.
    """

    video_id: str
    data: np.ndarray
    offset_s: float
    step_s: float
    bounds: np.ndarray
    labels: np.ndarray
    annotation: VideoAnnotation

    def to_seconds(self, grid: np.ndarray | float) -> np.ndarray | float:
        return self.offset_s + np.asarray(grid) * self.step_s


def _to_grid(ann: VideoAnnotation, classes: tuple[str, ...], offset_s: float, step_s: float):
    index = {c: i for i, c in enumerate(classes)}
    keep = [i for i, lab in enumerate(ann.labels) if lab in index]
    bounds = np.array([ann.segments[i] for i in keep], np.float32).reshape(-1, 2)
    labels = np.array([index[ann.labels[i]] for i in keep], np.int64)
    return (bounds - offset_s) / step_s, labels


def load_videos(
    config: DataConfig,
    subset: str,
    *,
    fps: float,
    image_size: int,
    classes: tuple[str, ...] | None = None,
    progress: Callable[[int, int], None] | None = None,
    framing: SignalFraming | None = None,
    feature_dim: int | None = None,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[list[VideoItem], tuple[str, ...]]:
    """Loads every video of `subset` ("all": every video of the JSON) as frames (kind
    "videos"), features ("features", each of width `feature_dim` when given) or signal
    frames ("signals", cut by `framing`); `progress(done, total)` after each. `transform`:
    each video's data goes through it as soon as it is loaded and only its result is kept
    (a frozen backbone: a video's frames never all sit in memory at once). Segments of
    labels outside `classes` are left out with a warning (none matching is an error)."""
    anns, file_classes = load_annotations(config.annotations)
    classes = classes or file_classes
    root = Path(config.root)
    items = []
    chosen = [a for a in anns if subset in (a.subset, "all")]
    for ann in chosen:
        path = root / f"{ann.video_id}{config.file_ext}"
        if config.kind == "signals":
            data = recording_frames(path, ann, framing, config.annotations)
            step_s = framing.hop_samples / framing.sample_rate_hz
            offset_s = framing.frame_time_s(0)
        elif config.kind == "features":
            if ann.fps is None:
                raise ValueError(f"{config.annotations}: video {ann.video_id} has no fps")
            data = np.load(path).astype(np.float32)
            if data.ndim != 2 or (feature_dim is not None and data.shape[1] != feature_dim):
                raise ValueError(
                    f"{path}: features of shape {data.shape}, but the model takes (T, "
                    f"{feature_dim}); set model.backbone.feature_dim to the features' width"
                )
            step_s = config.feature_stride / ann.fps
            offset_s = 0.5 * config.num_frames / ann.fps
        else:
            data = decoded_frames(path, config.cache_dir, fps=fps, size=image_size)
            step_s, offset_s = 1.0 / fps, 0.0
        if transform is not None:
            data = transform(data)
        bounds, labels = _to_grid(ann, classes, offset_s, step_s)
        items.append(VideoItem(ann.video_id, data, offset_s, step_s, bounds, labels, ann))
        if progress is not None:
            progress(len(items), len(chosen))
    if not items:
        raise ValueError(f"{config.annotations}: no videos in subset {subset!r}")
    check_labels(chosen, classes, config.annotations)
    return items, classes


def check_labels(anns: list[VideoAnnotation], classes: tuple[str, ...], where: str) -> None:
    """Warns about segments whose label is not one of `classes` (they are left out); an
    error when no segment at all has a known label."""
    labels = [lab for a in anns for lab in a.labels]
    unknown = sorted({lab for lab in labels if lab not in classes})
    if not unknown:
        return
    dropped = sum(lab in unknown for lab in labels)
    if dropped == len(labels):
        raise ValueError(
            f"{where}: no segment's label is one of the model's classes {list(classes)} "
            f"(the file has {unknown[:8]}); set model.classes to the annotation labels"
        )
    logger.warning(
        "%s: %d of %d segments have labels the model does not know (%s); they are left out",
        where,
        dropped,
        len(labels),
        ", ".join(unknown[:8]) + (" ..." if len(unknown) > 8 else ""),
    )


def recording_frames(
    path: Path, ann: VideoAnnotation, framing: SignalFraming | None, annotations: str
) -> np.ndarray:
    """(T, W + 1, C) frames of one signal recording, cut as a signal reader cuts them; its
    sampling rate (the annotation's fps) and channels must be the model's."""
    if framing is None:
        raise ValueError('data.kind "signals" needs a signal model (model.input kind signal)')
    if ann.fps is not None and abs(ann.fps - framing.sample_rate_hz) > 1e-6 * ann.fps:
        raise ValueError(
            f"{annotations}: recording {ann.video_id} is sampled at {ann.fps:g} Hz (its fps) "
            f"but model.input.sample_rate_hz is {framing.sample_rate_hz:g}"
        )
    try:
        samples = load_signal(path)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from None
    if samples.shape[1] != framing.channels:
        raise ValueError(
            f"{path}: {samples.shape[1]} channels, but model.input.channels is {framing.channels}"
        )
    return signal_frames(samples, framing)


def decoded_frames(path: Path, cache_dir: str | None, *, fps: float, size: int) -> np.ndarray:
    """(T, size, size, 3) uint8 frames of a video file at `fps`, decoded as a reader does;
    kept in `cache_dir` (keyed by path, mtime, fps and size) when given."""
    options = ReaderOptions(width=size, height=size, fps=fps, stream=StreamConfig(realtime=False))
    cache = None
    if cache_dir is not None:
        key = hashlib.sha1(f"{path.resolve()}:{path.stat().st_mtime_ns}:{fps}:{size}".encode())
        cache = Path(cache_dir) / f"frames-{path.stem}-{key.hexdigest()[:12]}.npy"
        if cache.exists():
            return np.load(cache)
    frames = np.stack([f.image for f in decode_file(parse_source(str(path)), options)])
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npy")
        np.save(tmp, frames)
        tmp.replace(cache)
    return frames


@dataclass(frozen=True)
class Batch:
    """inputs: (B, C + T, ...) frames (uint8) or features; valid: (B, C + T) bool;
    targets for the last T steps (the head's window), each with a leading batch dim:
    ActionFormer's point targets (None for frame-labelling heads), frame_labels (B, T, K)
    multi-hot per frame, and segments: per window a (N, 3) float tensor (start, end, class)
    in frames of the window."""

    inputs: torch.Tensor
    valid: torch.Tensor
    targets: Targets | None
    frame_labels: torch.Tensor
    segments: list[torch.Tensor]

    def to(self, device: str | torch.device) -> Batch:
        """The targets on `device` (the segments stay on the CPU: they are matched there)."""
        targets = None if self.targets is None else Targets(*(t.to(device) for t in self.targets))
        return Batch(self.inputs, self.valid, targets, self.frame_labels.to(device), self.segments)


class WindowSampler:
    """Draws random windows: `context` steps for the temporal encoder to warm up on, then the
    head's `window` steps, with targets for the window (actions clipped to it). With
    `strides` None (a frame-labelling head) ActionFormer's point targets are not made."""

    def __init__(
        self,
        videos: list[VideoItem],
        *,
        window: int,
        context: int,
        strides: tuple[int, ...] | None,
        regression_ranges: tuple[tuple[float, float], ...],
        num_classes: int,
        center_radius: float,
        onset_windows: float = 0.0,
        onset_span_frames: int = 30,
    ) -> None:
        self.videos, self.window, self.context = videos, window, context
        self.onset_windows, self.onset_span = onset_windows, onset_span_frames
        self.num_classes, self.center_radius = num_classes, center_radius
        self.points = make_points(window, strides) if strides else None
        self.ranges = point_ranges(self.points, regression_ranges) if strides else None
        lengths = np.array([len(v.data) for v in videos], float)
        self.weights = lengths / lengths.sum()

    def sample(self, batch_size: int, rng: np.random.Generator) -> Batch:
        inputs, valid, cls, reg, pos, frames, segments = [], [], [], [], [], [], []
        total = self.context + self.window
        for _ in range(batch_size):
            video = self.videos[rng.choice(len(self.videos), p=self.weights)]
            end = self._window_end(video, rng)
            start = end - total
            x = np.zeros((total, *video.data.shape[1:]), video.data.dtype)
            v = np.zeros(total, bool)
            lo = max(start, 0)
            x[lo - start :] = video.data[lo:end]
            v[lo - start :] = True
            win0 = end - self.window  # grid position of the head window's first step
            b = video.bounds - win0
            inside = (b[:, 1] > 0.5) & (b[:, 0] < self.window - 0.5)
            b = np.clip(b[inside], 0, self.window)
            labels = video.labels[inside]
            inputs.append(torch.from_numpy(x))
            valid.append(torch.from_numpy(v))
            frames.append(frame_labels(b, labels, self.window, self.num_classes))
            segments.append(torch.from_numpy(np.column_stack([b, labels]).astype(np.float32)))
            if self.points is None:
                continue
            t = make_targets(
                torch.from_numpy(b).float(),
                torch.from_numpy(labels),
                self.points,
                self.ranges,
                num_classes=self.num_classes,
                center_radius=self.center_radius,
            )
            head_valid = torch.from_numpy(v[-self.window :])
            pos.append(t.positive & _points_valid(head_valid, self.points))
            cls.append(t.cls)
            reg.append(t.reg)
        targets = (
            Targets(torch.stack(cls), torch.stack(reg), torch.stack(pos))
            if self.points is not None
            else None
        )
        return Batch(
            torch.stack(inputs), torch.stack(valid), targets, torch.stack(frames), segments
        )

    def _window_end(self, video: VideoItem, rng: np.random.Generator) -> int:
        """Where a window ends (exclusive grid index): anywhere in the video (a stream is
        judged at every instant), or, for a share `onset_windows`, 1 to `onset_span` steps
        into a random action (the windows an onset is decided on). With a share of 0 the
        generator is drawn exactly as before the option existed."""
        n = len(video.data)
        if self.onset_windows and len(video.bounds) and rng.random() < self.onset_windows:
            start = float(video.bounds[rng.integers(len(video.bounds)), 0])
            into = int(rng.integers(1, self.onset_span + 1))
            return int(np.clip(np.ceil(start) + into, 1, n))
        return int(rng.integers(min(n, self.window // 4), n + 1))


def frame_labels(bounds: np.ndarray, labels: np.ndarray, length: int, num_classes: int):
    """Actions (N, 2) in grid units (frame i covers [i, i + 1)) → (length, K) multi-hot: frame
    i shows class k when its centre lies inside an action of class k."""
    out = torch.zeros(length, num_classes)
    centres = np.arange(length) + 0.5
    for (s, e), k in zip(bounds, labels, strict=True):
        out[torch.from_numpy((centres >= s) & (centres < e)), int(k)] = 1.0
    return out


def _points_valid(valid: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """A point is valid when the frame at its position is (nearest down-sampling)."""
    return valid[points[:, 0].long()]
