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


def with_display_rotation(path: Path, out: Path, clockwise_degrees: int) -> Path:
    """A copy of an mp4 whose first track header carries a display matrix turning the picture
    `clockwise_degrees` (90, 180 or 270) for display, as phones write it."""
    import struct

    one = 0x10000
    matrix = {
        90: (0, one, 0, -one, 0, 0),
        180: (-one, 0, 0, 0, -one, 0),
        270: (0, -one, 0, one, 0, 0),
    }[clockwise_degrees]
    data = bytearray(path.read_bytes())
    at = data.find(b"tkhd")
    version = data[at + 4]
    # version/flags, times and track id, reserved, duration, reserved, layer..volume, reserved
    at += 4 + 4 + (32 if version == 1 else 20) + 8 + 8
    data[at : at + 36] = struct.pack(">9i", *matrix, 0, 0, 0x40000000)
    out.write_bytes(bytes(data))
    return out


def damaged_copy(path: Path, out: Path, *, holes: int = 5, size: int = 400) -> Path:
    """A copy of an mp4 with `holes` runs of random bytes written over its media data."""
    data = bytearray(path.read_bytes())
    start = data.find(b"mdat") + 8
    rng = np.random.default_rng(0)
    for k in range(holes):
        at = start + (len(data) - start) * (k + 1) // (holes + 2)
        data[at : at + size] = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
    out.write_bytes(bytes(data))
    return out
