"""Hardware decoding (`stream.hwaccel`): which device PyAV decodes on, decided once per process.

"none" decodes in software. "cuda" (NVDEC) or "vaapi" (Intel / AMD) asks for that device;
"auto" takes the first of them that works here. Whether a device works is probed once, by
decoding one generated H.264 frame on it (FFmpeg quietly decodes in software when a device
cannot take a stream, so opening alone proves nothing). A device that does not work means
software decoding, with the reason logged once. Decoded frames are downloaded to system memory
and resized as software frames are, so the model gets frames of the same size and timing
either way; a source whose codec the device cannot take is decoded in software (PyAV's
fallback).
"""

from __future__ import annotations

import functools
import io
import logging
from fractions import Fraction

import av
import numpy as np
from av.codec.hwaccel import HWAccel, hwdevices_available

logger = logging.getLogger(__name__)

DEVICES = ("cuda", "vaapi")  # the order "auto" tries them in


@functools.cache
def _probe_clip() -> bytes:
    """Two frames of H.264 (made with libx264), enough to show a decoder on a device."""
    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 128, 96, "yuv420p"
        stream.time_base = Fraction(1, 10)
        for i in range(2):
            frame = av.VideoFrame.from_ndarray(np.full((96, 128, 3), 60 * i, np.uint8), "rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out.getvalue()


@functools.cache
def unavailable(device: str) -> str | None:
    """Why `device` cannot decode here (None: it can)."""
    if device not in hwdevices_available():
        has = ", ".join(hwdevices_available()) or "none"
        return f"this FFmpeg has no {device} support (it has: {has})"
    try:
        with av.open(io.BytesIO(_probe_clip()), hwaccel=HWAccel(device)) as container:
            stream = container.streams.video[0]
            next(container.decode(stream))
            if not stream.codec_context.is_hwaccel:
                return f"FFmpeg's H.264 decoder did not take the {device} device"
    except (av.FFmpegError, OSError, StopIteration) as exc:
        return f"no usable {device} device ({exc})"
    return None


@functools.cache
def chosen(setting: str) -> str | None:
    """The device `setting` decodes on here (None: software), the reason logged once."""
    if setting == "none":
        return None
    wanted = DEVICES if setting == "auto" else (setting,)
    reasons = []
    for device in wanted:
        reason = unavailable(device)
        if reason is None:
            logger.info("decoding video on %s (stream.hwaccel: %s)", device, setting)
            return device
        reasons.append(reason)
    logger.log(
        logging.INFO if setting == "auto" else logging.WARNING,
        "stream.hwaccel %s: decoding in software: %s",
        setting,
        "; ".join(reasons),
    )
    return None


def hwaccel_for(setting: str) -> HWAccel | None:
    """What `av.open` takes for `setting` (None: software decoding)."""
    device = chosen(setting)
    return HWAccel(device, allow_software_fallback=True) if device else None
