"""Test media made with PyAV (nothing binary is committed)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from stream.synthetic import SyntheticScene


def write_h264_mp4(
    path: Path, frames: list[np.ndarray], fps: int = 25, gop: int | None = None
) -> Path:
    """Encodes RGB frames (H, W, 3) into an H.264 mp4 (no B-frames, one IDR per `gop`)."""
    h, w, _ = frames[0].shape
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"preset": "ultrafast", "bf": "0", "g": str(gop or fps)}
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def scene_frames(n: int, *, fps: int = 25, width: int = 160, height: int = 120, seed: int = 3):
    scene = SyntheticScene(seed=seed, width=width, height=height)
    return [scene.render(i / fps) for i in range(n)]


def decode_all(
    path: str, options: dict | None = None, limit: int | None = None
) -> list[np.ndarray]:
    """Every frame of a file or URL as RGB arrays at its own size."""
    out = []
    with av.open(path, options=options or {}) as container:
        for frame in container.decode(video=0):
            out.append(frame.to_ndarray(format="rgb24"))
            if limit is not None and len(out) >= limit:
                break
    return out
