"""`actstream synth`: synthetic action videos (H.264 mp4) with annotations.

The scenes come from `stream.synthetic` (the same renderer as the live `synthetic://`
source): actions defined by motion, several per video, overlapping across actors.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import av
import numpy as np

from stream.synthetic import CLASSES, SyntheticScene
from stream.synthetic_signal import CSI_CLASSES, SyntheticCsi
from training.annotations import VideoAnnotation, write_annotations

SPLITS = (("train", 0.7), ("validation", 0.15), ("test", 0.15))
SPLIT_NAMES = tuple(name for name, _ in SPLITS)


def subset_of(index: int, total: int) -> str:
    """Deterministic split: the first 70 % train, the next 15 % validation, the rest test."""
    edge = 0.0
    for name, share in SPLITS:
        edge += share * total
        if index < round(edge):
            return name
    return SPLITS[-1][0]


def split_plan(total: int, split: str | None) -> list[tuple[str, int]]:
    """(subset, index within the subset) of each of `total` items: 70 / 15 / 15 in order, or
    every item in `split`."""
    if split is not None and split not in SPLIT_NAMES:
        raise ValueError(f"split must be one of {', '.join(SPLIT_NAMES)}, got {split!r}")
    counts: dict[str, int] = {}
    plan = []
    for i in range(total):
        name = split or subset_of(i, total)
        plan.append((name, counts.get(name, 0)))
        counts[name] = counts.get(name, 0) + 1
    return plan


class SplitStreams:
    """One random stream per subset, so that the k-th scene of a subset is a pure function of
    (seed, subset, k): train, validation and test scenes never coincide, whatever the number
    of items or the split asked for. The train stream is `random.Random(seed)` itself (the
    bundled model's training scenes); the others are seeded with "seed:subset"."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._streams: dict[str, random.Random] = {}

    def __getitem__(self, subset: str) -> random.Random:
        if subset not in self._streams:
            key = self.seed if subset == "train" else f"{self.seed}:{subset}"
            self._streams[subset] = random.Random(key)
        return self._streams[subset]

    def item_id(self, prefix: str, subset: str, index: int) -> str:
        """`prefix_seed_00007` for train, `prefix_seed_validation_00007` for the others."""
        middle = "" if subset == "train" else f"{subset}_"
        return f"{prefix}_{self.seed}_{middle}{index:05d}"


def write_video(path: Path, scene: SyntheticScene, *, duration_s: float, fps: int) -> None:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = scene.width, scene.height, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "18", "bf": "0", "g": str(2 * fps)}
        for i in range(int(round(duration_s * fps))):
            frame = av.VideoFrame.from_ndarray(scene.render(i / fps), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def plan_scenes(
    videos: int,
    *,
    seed: int = 0,
    duration_s: float = 60.0,
    size: int = 64,
    split: str | None = None,
) -> Iterator[tuple[str, str, SyntheticScene]]:
    """(video id, subset, scene) of each video `write_synthetic_dataset` writes, in order."""
    streams = SplitStreams(seed)
    for subset, k in split_plan(videos, split):
        rng = streams[subset]
        scene = SyntheticScene(
            seed=rng.getrandbits(31),
            width=size,
            height=size,
            num_actors=rng.choice((1, 2, 2, 3)),
            num_distractors=rng.choice((0, 1, 2)),
            duration_s=duration_s,
        )
        yield streams.item_id("synth", subset, k), subset, scene


def write_synthetic_dataset(
    out_dir: str | Path,
    *,
    videos: int,
    seed: int = 0,
    duration_s: float = 60.0,
    fps: int = 10,
    size: int = 64,
    split: str | None = None,
    jobs: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Writes `videos` mp4 files and `annotations.json` into `out_dir`; returns the JSON path.
    `split`: every video in that subset (default: 70 / 15 / 15 train / validation / test).
    `jobs` processes encode videos in parallel; the files are the same whatever `jobs` is."""
    if videos < 1:
        raise ValueError(f"videos must be >= 1, got {videos}")
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plan = list(plan_scenes(videos, seed=seed, duration_s=duration_s, size=size, split=split))
    annotations = []
    for vid, subset, scene in plan:
        segs = scene.segments(duration_s)
        annotations.append(
            VideoAnnotation(
                video_id=vid,
                subset=subset,
                duration_s=duration_s,
                fps=float(fps),
                segments=tuple((s.start_s, s.end_s) for s in segs),
                labels=tuple(s.label for s in segs),
            )
        )
    paths = [out / f"{vid}.mp4" for vid, _, _ in plan]
    scenes = [scene for _, _, scene in plan]
    if jobs == 1:
        for i, (path, scene) in enumerate(zip(paths, scenes, strict=True)):
            write_video(path, scene, duration_s=duration_s, fps=fps)
            if progress is not None:
                progress(i + 1, videos)
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            written = pool.map(_write_one, paths, scenes, [duration_s] * videos, [fps] * videos)
            for i, _ in enumerate(written):
                if progress is not None:
                    progress(i + 1, videos)
    path = out / "annotations.json"
    write_annotations(path, annotations, CLASSES)
    return path


def _write_one(path: Path, scene: SyntheticScene, duration_s: float, fps: int) -> None:
    write_video(path, scene, duration_s=duration_s, fps=fps)


def write_signal_dataset(
    out_dir: str | Path,
    *,
    recordings: int,
    seed: int = 0,
    duration_s: float = 60.0,
    channels: int = 30,
    sample_rate_hz: float = 100.0,
    split: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Writes `recordings` synthetic CSI-like recordings (`stream.synthetic_signal`), one
    (T, channels) float32 `.npy` each, and `annotations.json` whose fps is the sampling rate;
    split and scene seeds as for videos (the k-th recording of a subset depends only on
    (seed, subset, k)). Returns the JSON path."""
    if recordings < 1:
        raise ValueError(f"recordings must be >= 1, got {recordings}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    streams = SplitStreams(seed)
    annotations = []
    for i, (subset, k) in enumerate(split_plan(recordings, split)):
        csi = SyntheticCsi(
            seed=streams[subset].getrandbits(31),
            duration_s=duration_s,
            channels=channels,
            sample_rate_hz=sample_rate_hz,
        )
        rid = streams.item_id("csi", subset, k)
        np.save(out / f"{rid}.npy", csi.samples())
        segs = csi.segments()
        annotations.append(
            VideoAnnotation(
                video_id=rid,
                subset=subset,
                duration_s=duration_s,
                fps=float(sample_rate_hz),
                segments=tuple((s, e) for s, e, _ in segs),
                labels=tuple(label for _, _, label in segs),
            )
        )
        if progress is not None:
            progress(i + 1, recordings)
    path = out / "annotations.json"
    write_annotations(path, annotations, CSI_CLASSES)
    return path
