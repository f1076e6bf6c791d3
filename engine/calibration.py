"""Frames to calibrate int8 on: real frames of the model's training videos (or the videos
given), decoded exactly as a reader delivers them (`engine.backends.quantize` uses them)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.backends.base import BackendError
from models.action_model import ModelConfig
from stream.frame_sources import decode_file
from stream.settings import ReaderOptions, StreamConfig
from stream.sources import SourceError, parse_source

CALIBRATION_FRAMES = 64  # frames the activation ranges are measured on
VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".ts")


def calibration_videos(calibration: str | None, trained_on: dict | None) -> list[Path]:
    """The videos to calibrate on: `calibration` (a video file, or a folder of them), else
    the checkpoint's own training videos (`trained_on`: the annotation file's folder and its
    train subset's video ids), where they are still on disk."""
    if calibration:
        path = Path(calibration)
        if path.is_file():
            return [path]
        if path.is_dir():
            videos = sorted(p for p in path.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
            if videos:
                return videos
            raise BackendError(f"{path}: no video files in it to calibrate int8 on")
        raise BackendError(f"{path}: no such video file or folder (--calibration)")
    if trained_on and trained_on.get("videos"):
        root = Path(str(trained_on.get("annotations", ""))).parent
        found = [
            v
            for vid in trained_on["videos"]
            for v in (root / f"{vid}{s}" for s in VIDEO_SUFFIXES)
            if v.is_file()
        ]
        if found:
            return found
    raise BackendError(
        "precision int8 needs frames to calibrate on: give --calibration VIDEO_OR_FOLDER (the "
        "checkpoint's training videos are not on disk here)"
    )


def calibration_frames(
    config: ModelConfig, videos: list[Path], count: int = CALIBRATION_FRAMES
) -> tuple[np.ndarray, np.ndarray]:
    """(count, s, s, 3) uint8 frames and each one's previous frame, decoded as a reader does
    at the model's size and rate, spread evenly over up to 16 of `videos` and over each."""
    s = config.backbone.image_size
    options = ReaderOptions(width=s, height=s, fps=config.fps, stream=StreamConfig(realtime=False))
    picked = [videos[i] for i in np.linspace(0, len(videos) - 1, min(16, len(videos))).astype(int)]
    per_video = -(-count // len(picked))
    images, previous = [], []
    for path in picked:
        try:
            frames = [f.image for f in decode_file(parse_source(str(path)), options)]
        except SourceError as exc:
            raise BackendError(f"cannot calibrate on it: {exc}") from None
        if len(frames) < 2:
            continue
        for i in np.linspace(1, len(frames) - 1, min(per_video, len(frames) - 1)).astype(int):
            images.append(frames[i])
            previous.append(frames[i - 1])
    if not images:
        raise BackendError(f"{videos[0].parent}: no frames decoded to calibrate int8 on")
    return np.stack(images[:count]), np.stack(previous[:count])
