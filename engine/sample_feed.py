"""Live sample streams fed over ZeroMQ (`zmq+tcp://HOST:PORT`), so that any program can feed
actstream: the sender binds a PUB socket and publishes chunks of samples; actstream connects
a SUB socket to it.

Each message is two frames (multipart):
1. a JSON header, UTF-8: `{"channels": C, "sample_rate_hz": R, "dtype": "float32"}` plus,
   optionally, `"t0_s"`: the time of the chunk's first sample on the sender's clock (samples
   are then `1 / R` apart; a jump between chunks is reported as a gap) and `"topic"` (ignored);
2. the samples: n·C values of `dtype` (a NumPy dtype name: float32, float64, int16, ...),
   little-endian, row-major (sample after sample).

Without `t0_s`, time is the running sample count ÷ R. A message that does not fit (bad
JSON, another shape or rate, a byte count that is not a whole number of samples) is skipped
with a warning naming the problem, and counted; the stream goes on.

ZeroMQ stays out of stream/: `engine.build` hands
`open_sample_feed` to the reader of such a source.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
import zmq

from stream.settings import ReaderOptions
from stream.signals import PULL_TIMEOUT_S, LiveSampleFrames, check_stream
from stream.sources import SourceError, SourceSpec

logger = logging.getLogger(__name__)


def encode_chunk(
    samples: np.ndarray, sample_rate_hz: float, t0_s: float | None = None
) -> list[bytes]:
    """The two frames of one chunk of (n, C) samples, as a sender writes them."""
    samples = np.ascontiguousarray(samples)
    if samples.ndim != 2:
        raise ValueError(f"samples must be (n, C), got shape {samples.shape}")
    header: dict[str, Any] = {
        "channels": samples.shape[1],
        "sample_rate_hz": sample_rate_hz,
        "dtype": samples.dtype.newbyteorder("<").name,
    }
    if t0_s is not None:
        header["t0_s"] = t0_s
    return [json.dumps(header).encode(), samples.astype(samples.dtype.newbyteorder("<")).tobytes()]


def decode_chunk(frames: list[bytes]) -> tuple[dict, np.ndarray]:
    """(header, (n, C) float32 samples) of one message; ValueError saying what is wrong."""
    if len(frames) != 2:
        raise ValueError(f"expected 2 frames (header, samples), got {len(frames)}")
    try:
        header = json.loads(frames[0])
        channels, rate = int(header["channels"]), float(header["sample_rate_hz"])
        dtype = np.dtype(str(header.get("dtype", "float32"))).newbyteorder("<")
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"bad header ({exc})") from None
    if channels < 1 or rate <= 0 or dtype.kind not in "fiu":
        raise ValueError("bad header: channels >= 1, sample_rate_hz > 0, a numeric dtype")
    row = channels * dtype.itemsize
    if len(frames[1]) % row:
        raise ValueError(f"{len(frames[1])} bytes is not a whole number of {channels}-value rows")
    samples = np.frombuffer(frames[1], dtype).reshape(-1, channels).astype(np.float32)
    if not np.isfinite(samples).all():
        raise ValueError("samples hold NaN or inf")
    return header, samples


class ZmqSampleFrames(LiveSampleFrames):
    """A SUB socket on a sender of sample chunks, as a live source of signal frames (source
    clock: the chunks' `t0_s`, where given)."""

    def connect(self) -> None:
        self.skipped = 0
        self.count = 0  # samples received (the clock of chunks without t0_s)
        self.socket = zmq.Context.instance().socket(zmq.SUB)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.RCVHWM, 1000)
        self.socket.setsockopt(zmq.SUBSCRIBE, b"")
        self.socket.connect(self.spec.url.removeprefix("zmq+"))

    def pull(self) -> tuple[np.ndarray, np.ndarray, bool] | None:
        if not self.socket.poll(int(PULL_TIMEOUT_S * 1000)):
            return None
        frames = self.socket.recv_multipart()
        period = 1.0 / self.framing.sample_rate_hz
        try:
            header, samples = decode_chunk(frames)
            check_stream(self.spec, self.framing, samples.shape[1], header["sample_rate_hz"])
        except ValueError as exc:  # a SourceError is a ValueError too
            self.skipped += 1
            logger.warning("%s: skipped a message: %s", self.spec.display, exc)
            return np.zeros((0, self.framing.channels), np.float32), np.zeros(0), False
        given = header.get("t0_s")
        own = isinstance(given, int | float) and not isinstance(given, bool)
        start = float(given) if own else self.count * period
        self.count += len(samples)
        return samples, start + np.arange(len(samples)) * period, own

    def close(self) -> None:
        self.socket.close(linger=0)


def open_sample_feed(
    spec: SourceSpec, options: ReaderOptions, *_packets_and_errors, **kw
) -> ZmqSampleFrames:
    """The reader's opener for a `zmq+tcp://` source (arguments as `open_frame_source`'s;
    a sample feed has no packets and no decode errors)."""
    if options.signal is None:
        raise SourceError(
            f"{spec.display}: a sensor feed needs a signal model (model.input kind signal); "
            "give a video source to this model"
        )
    return ZmqSampleFrames(spec, options, stop=kw.get("stop"), on_gap=kw.get("on_gap"))
