"""Signal sources: multichannel sensor samples (WiFi CSI, IMU) as the frames a signal model
takes.

A signal frame is one hop of samples: frame i ends at sample (i + 1)·hop - 1 (its time is
that sample's, `index / sample_rate_hz`) and holds the `window_samples` samples up to it
plus the one before them, so that the model's first-order difference is causal and the
same across chunk boundaries as over the whole recording. Samples before the recording's
first repeat it (a stream starts with no change). `signal_frames` cuts a whole recording
the way a reader does, for training and offline evaluation.

File sources: `.npy` (a (T, C) array) and `.csv` (one row per sample, C numeric columns, an
optional header line), with the sampling rate in the query (`rec.npy?rate=50`) or the
model's; paced like a live sensor, or as fast as the model takes them (`--fast`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stream.sources import SourceError, SourceSpec

logger = logging.getLogger(__name__)
PULL_TIMEOUT_S = 0.2  # how often a live sample source waiting for data checks for a stop


@dataclass(frozen=True, kw_only=True)
class SignalFraming:
    """How samples become frames (the model's `input` section, as readers need it).

    Attributes:
        channels: C, values per sample.
        sample_rate_hz: samples per second.
        window_samples: W, samples a frame holds (besides the one before them).
        hop_samples: samples between two frames.
    """

    channels: int
    sample_rate_hz: float
    window_samples: int
    hop_samples: int

    @property
    def fps(self) -> float:
        return self.sample_rate_hz / self.hop_samples

    def frame_time_s(self, index: int) -> float:
        """Stream time of frame `index`: the time of its last sample."""
        return ((index + 1) * self.hop_samples - 1) / self.sample_rate_hz


def signal_frames(samples: np.ndarray, framing: SignalFraming) -> np.ndarray:
    """A recording (T_s, C) → its frames (T, W + 1, C) float32, T = T_s // hop, oldest
    sample first in each frame."""
    W, hop = framing.window_samples, framing.hop_samples
    n = samples.shape[0] // hop
    padded = np.concatenate([np.repeat(samples[:1], W + 1, axis=0), samples]).astype(np.float32)
    ends = np.arange(n) * hop + hop - 1 + W + 1  # each frame's last sample, in `padded`
    return padded[ends[:, None] - np.arange(W, -1, -1)[None, :]]


def load_signal(path: str | Path) -> np.ndarray:
    """A recording as a (T, C) float32 array: `.npy` (1-D arrays are one channel) or `.csv`
    (a first line that is not numeric is a header). Raises ValueError saying what is wrong."""
    path = Path(path)
    if path.suffix.lower() == ".npy":
        try:
            data = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise ValueError(f"not a NumPy array file ({str(exc).splitlines()[0][:120]})") from None
    else:
        data = _load_csv(path)
    if data.ndim == 1:
        data = data[:, None]
    if data.ndim != 2 or data.shape[0] == 0 or data.shape[1] == 0:
        raise ValueError(f"expected samples × channels (T, C), got shape {data.shape}")
    if not np.issubdtype(data.dtype, np.number) or np.issubdtype(data.dtype, np.complexfloating):
        raise ValueError(f"expected real numbers, got dtype {data.dtype}")
    data = data.astype(np.float32)
    if not np.isfinite(data).all():
        bad = int(np.argwhere(~np.isfinite(data))[0, 0])
        raise ValueError(f"sample {bad} is not a finite number (NaN or inf)")
    return data


def _load_csv(path: Path) -> np.ndarray:
    try:
        with path.open("r", encoding="utf-8") as f:
            first = f.readline()
    except UnicodeDecodeError:
        raise ValueError("not a text CSV file") from None
    skip = 0
    try:
        [float(v) for v in first.strip().split(",") if v.strip()]
    except ValueError:
        skip = 1  # a header line
    try:
        return np.loadtxt(path, delimiter=",", skiprows=skip, dtype=np.float64, ndmin=2)
    except ValueError as exc:
        raise ValueError(f"not numeric CSV ({str(exc).splitlines()[0][:120]})") from None


class SignalFileFrames:
    """A recorded signal replayed as a stream's frames (a `FrameSource`): iterate for
    (t_s, frame index); `image(index)` is that frame's (W + 1, C) float32 samples."""

    finite = True

    def __init__(self, path: str, framing: SignalFraming, rate_hz: float | None = None) -> None:
        if rate_hz is not None and abs(rate_hz - framing.sample_rate_hz) > 1e-6 * rate_hz:
            raise ValueError(
                f"sampled at {rate_hz:g} Hz but the model takes {framing.sample_rate_hz:g} Hz "
                "(input.sample_rate_hz); resample the recording or train a model at its rate"
            )
        samples = load_signal(path)
        if samples.shape[1] != framing.channels:
            raise ValueError(
                f"has {samples.shape[1]} channels but the model takes {framing.channels} "
                "(input.channels)"
            )
        if samples.shape[0] < framing.hop_samples:
            raise ValueError(
                f"has {samples.shape[0]} samples, fewer than one hop ({framing.hop_samples})"
            )
        self.framing = framing
        self.fps = framing.fps
        self.frames = signal_frames(samples, framing)

    def __iter__(self) -> Iterator[tuple[float, int]]:
        for i in range(len(self.frames)):
            yield self.framing.frame_time_s(i), i

    def image(self, raw: int) -> np.ndarray:
        return self.frames[raw]

    def preview(self, raw: int, width: int, image: np.ndarray) -> np.ndarray:
        """The window as a picture for the live view: channels top to bottom, time left to
        right, each channel scaled to its own range in the window (grey levels)."""
        return signal_picture(image[1:], width)

    def close(self) -> None:
        """Nothing to release: the recording is in memory."""


def signal_picture(window: np.ndarray, width: int) -> np.ndarray:
    """(W, C) samples → (H, width, 3) uint8: one band of rows per channel, time along x."""
    lo, hi = window.min(axis=0), window.max(axis=0)
    grey = (window - lo) / np.where(hi > lo, hi - lo, 1.0)  # (W, C) in [0, 1]
    band = max(1, min(16, 256 // window.shape[1]))
    xs = (np.arange(width) * window.shape[0] // width).clip(0, window.shape[0] - 1)
    img = np.repeat(grey[xs].T, band, axis=0)  # (C·band, width)
    return np.repeat((img * 255 + 0.5).astype(np.uint8)[..., None], 3, axis=2)


class SampleFramer:
    """Live samples, in chunks of any size, → the frames `signal_frames` would cut from the
    same samples as one recording: every `hop` samples, the last W + 1 (the first sample
    repeated before the stream's start). Gaps in the sample clock (two consecutive
    timestamps more than 1.5 sample periods apart) are counted and reported."""

    def __init__(self, framing: SignalFraming, on_gap=None) -> None:
        self.framing = framing
        self.on_gap = on_gap  # called with (at_s, gap_s) for each gap found
        self.samples_seen = 0
        self.gaps = 0
        self._window: np.ndarray | None = None  # the last W + 1 samples
        self._since = 0  # samples since the last frame
        self._last_ts: float | None = None

    def push(self, samples: np.ndarray, timestamps: np.ndarray) -> list[tuple[float, np.ndarray]]:
        """Adds (n, C) samples with their (n,) times in seconds; returns the frames they
        complete as (time of the frame's last sample, (W + 1, C) float32)."""
        f = self.framing
        samples = np.asarray(samples, np.float32).reshape(-1, f.channels)
        timestamps = np.asarray(timestamps, np.float64).reshape(-1)
        if len(samples) != len(timestamps):
            raise ValueError(f"{len(samples)} samples but {len(timestamps)} timestamps")
        period = 1.0 / f.sample_rate_hz
        out = []
        for x, ts in zip(samples, timestamps, strict=True):
            if self._last_ts is not None and ts - self._last_ts > 1.5 * period:
                self.gaps += 1
                if self.on_gap is not None:
                    self.on_gap(float(self._last_ts), float(ts - self._last_ts - period))
            self._last_ts = float(ts)
            if self._window is None:
                self._window = np.repeat(x[None], f.window_samples + 1, axis=0)
            else:
                self._window = np.concatenate([self._window[1:], x[None]])
            self.samples_seen += 1
            self._since += 1
            if self._since == f.hop_samples:
                self._since = 0
                out.append((float(ts), self._window.copy()))
        return out


def check_stream(spec: SourceSpec, framing: SignalFraming, channels: int, rate_hz: float):
    """Refuses a live stream whose shape is not the model's (one line naming it)."""
    if channels != framing.channels:
        raise SourceError(
            f"{spec.display}: has {channels} channels but the model takes {framing.channels} "
            "(input.channels)"
        )
    if rate_hz <= 0:
        raise SourceError(
            f"{spec.display}: has an irregular sampling rate; the model needs "
            f"{framing.sample_rate_hz:g} Hz samples"
        )
    if abs(rate_hz - framing.sample_rate_hz) > 1e-6 * rate_hz:
        raise SourceError(
            f"{spec.display}: sampled at {rate_hz:g} Hz but the model takes "
            f"{framing.sample_rate_hz:g} Hz (input.sample_rate_hz)"
        )


class LiveSampleFrames:
    """What every live sample source shares (a `FrameSource`): chunks from `pull()` cut into
    frames by a `SampleFramer`; iterate for (t_s, (source clock s or None, (W + 1, C)
    samples)), stream time running from the connection's first frame. No chunk within
    `stream.timeout_s` raises TimeoutError (the reader reconnects); `stop` ends the wait;
    gaps in the sample clock are logged and passed to `on_gap(at_s, gap_s)`."""

    finite = False

    def __init__(
        self,
        spec: SourceSpec,
        options: Any,
        *,
        stop: threading.Event | None = None,
        on_gap: Callable[[float, float], None] | None = None,
    ) -> None:
        """`options`: the reader's `ReaderOptions` (its `signal` framing must be set).
        Subclasses connect in `connect()`, called last."""
        framing = options.signal
        assert framing is not None
        self.spec, self.framing, self.timeout_s = spec, framing, options.stream.timeout_s
        self.stop = stop or threading.Event()
        self.fps = framing.fps

        def gap(at_s: float, gap_s: float) -> None:
            logger.warning(
                "%s: gap of %.3f s in the sample clock at %.3f (about %d samples missing)",
                spec.display,
                gap_s,
                at_s,
                round(gap_s * framing.sample_rate_hz),
            )
            if on_gap is not None:
                on_gap(at_s, gap_s)

        self.framer = SampleFramer(framing, on_gap=gap)
        self.connect()

    def connect(self) -> None:  # pragma: no cover - interface
        """Opens the transport (raises what opening raises)."""
        raise AssertionError("abstract")

    def pull(self) -> tuple[np.ndarray, np.ndarray, bool] | None:  # pragma: no cover
        """The next chunk: (n, C) samples, their (n,) times, whether those are the source's
        own clock; None when nothing came within PULL_TIMEOUT_S."""
        raise AssertionError("abstract")

    def __iter__(self) -> Iterator[tuple[float, tuple[float | None, np.ndarray]]]:
        t0 = None
        heard = time.monotonic()
        while not self.stop.is_set():
            chunk = self.pull()
            if chunk is None:
                if time.monotonic() - heard > self.timeout_s:
                    raise TimeoutError(f"no samples within {self.timeout_s:g} s")
                continue
            heard = time.monotonic()
            samples, stamps, own_clock = chunk
            for clock_s, window in self.framer.push(samples, stamps):
                t0 = clock_s if t0 is None else t0
                yield clock_s - t0, (clock_s if own_clock else None, window)

    def image(self, raw: tuple[float | None, np.ndarray]) -> np.ndarray:
        return raw[1]

    def source_clock_s(self, raw: tuple[float | None, np.ndarray]) -> float | None:
        return raw[0]

    def preview(self, raw: Any, width: int, image: np.ndarray) -> np.ndarray:
        return signal_picture(image[1:], width)

    def close(self) -> None:
        """Releases the transport (subclasses)."""
