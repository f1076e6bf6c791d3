"""The clips folder: where an action's clip and snapshot go, retention by age and size, the
partial files a killed detector leaves, JPEG snapshots (FFmpeg's mjpeg encoder), and the
encoded clips of generated scenes."""

from __future__ import annotations

import logging
import math
import os
import time
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from stream.preview import encode_jpeg as stream_jpeg

logger = logging.getLogger(__name__)

EVIDENCE = (".mp4", ".jpg")


def clip_path(root: Path, stream: str, event_id: str, start_wall_s: float) -> Path:
    """`ROOT/<stream>/<YYYY-MM-DD>/<event_id>.mp4` (UTC day of the action's start); the
    snapshot is the same path with `.jpg`."""
    day = datetime.fromtimestamp(start_wall_s, UTC).strftime("%Y-%m-%d")
    return root / _safe(stream) / day / f"{_safe(event_id)}.mp4"


def retain(root: Path, *, retain_days: float | None, max_gb: float | None) -> tuple[int, int]:
    """Deletes clips and snapshots older than `retain_days`, then the oldest until the folder
    holds at most `max_gb` of them (None: no limit); (files deleted, bytes left)."""
    files = []
    for path in _files(root):
        if path.suffix not in EVIDENCE:
            continue
        try:
            st = path.stat()
        except OSError:
            continue
        files.append((st.st_mtime, st.st_size, path))
    files.sort()
    total = sum(size for _, size, _ in files)
    deleted = 0
    cutoff = None if retain_days is None else time.time() - retain_days * 86400
    limit = None if max_gb is None else max_gb * 1e9
    for mtime, size, path in files:
        too_old = cutoff is not None and mtime < cutoff
        too_big = limit is not None and total > limit
        if not (too_old or too_big):
            break
        try:
            path.unlink()
        except OSError as exc:
            logger.warning("clips: cannot delete %s (%s)", path, exc)
            continue
        total -= size
        deleted += 1
    return deleted, total


def remove_partial_files(root: Path) -> None:
    """`.part` files left by a detector that was killed while recording."""
    for path in _files(root):
        if path.name.endswith(".mp4.part"):
            try:
                path.unlink()
            except OSError:
                pass


def encode_jpeg(frame: av.VideoFrame, quality: int = 3) -> bytes:
    """One frame as a JPEG file (`quality`: 2 best ... 31 worst), turned upright as its
    display matrix says."""
    turns = round((frame.rotation or 0) / 90) % 4
    if turns:
        rgb = np.ascontiguousarray(np.rot90(frame.to_ndarray(format="rgb24"), turns))
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
    return stream_jpeg(frame, quality)


def encode_scene(path: Path, scene, fps: float, first_s: float, end_s: float) -> float:
    """Encodes a generated scene's frames from `first_s` to `end_s` (at least one) as H.264
    in an mp4 at `path`; the stream time where the clip ends."""
    with av.open(str(path), mode="w", format="mp4", options={"movflags": "+faststart"}) as out:
        video = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        video.width, video.height = scene.width // 2 * 2, scene.height // 2 * 2
        video.pix_fmt = "yuv420p"
        video.options = {"preset": "veryfast", "crf": "20", "bf": "0", "g": str(round(2 * fps))}
        first = round(first_s * fps)
        last = max(first, math.floor(end_s * fps + 1e-6))
        for k in range(first, last + 1):
            image = scene.render(k / fps)[: video.height, : video.width]
            out.mux(video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(video.encode())
    return (last + 1) / fps


def _files(root: Path):
    if not root.is_dir():
        return
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            yield Path(dirpath) / name


def _safe(name: str) -> str:
    """A path component from a stream or event id (ids are validated; this guards anyway)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name).lstrip(".") or "_"
