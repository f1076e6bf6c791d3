"""`actstream synth`: synthetic action videos (H.264 mp4) with annotations.

The scenes come from `stream.synthetic` (the same renderer as the live `synthetic://`
source): actions defined by motion, several per video, overlapping across actors.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import av

from stream.synthetic import CLASSES, SyntheticScene
from training.annotations import VideoAnnotation, write_annotations

SPLITS = (("train", 0.7), ("validation", 0.15), ("test", 0.15))


def subset_of(index: int, total: int) -> str:
    """Deterministic split: the first 70 % train, the next 15 % validation, the rest test."""
    edge = 0.0
    for name, share in SPLITS:
        edge += share * total
        if index < round(edge):
            return name
    return SPLITS[-1][0]


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


def write_synthetic_dataset(
    out_dir: str | Path,
    *,
    videos: int,
    seed: int = 0,
    duration_s: float = 60.0,
    fps: int = 10,
    size: int = 64,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Writes `videos` mp4 files and `annotations.json` into `out_dir`; returns the JSON path."""
    if videos < 1:
        raise ValueError(f"videos must be >= 1, got {videos}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    annotations = []
    for i in range(videos):
        scene = SyntheticScene(
            seed=rng.getrandbits(31),
            width=size,
            height=size,
            num_actors=rng.choice((1, 2, 2, 3)),
            num_distractors=rng.choice((0, 1, 2)),
            duration_s=duration_s,
        )
        vid = f"synth_{seed}_{i:05d}"
        write_video(out / f"{vid}.mp4", scene, duration_s=duration_s, fps=fps)
        segs = scene.segments(duration_s)
        annotations.append(
            VideoAnnotation(
                video_id=vid,
                subset=subset_of(i, videos),
                duration_s=duration_s,
                fps=float(fps),
                segments=tuple((s.start_s, s.end_s) for s in segs),
                labels=tuple(s.label for s in segs),
            )
        )
        if progress is not None:
            progress(i + 1, videos)
    path = out / "annotations.json"
    write_annotations(path, annotations, CLASSES)
    return path
