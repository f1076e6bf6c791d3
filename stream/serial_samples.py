"""Live samples from a sensor on a serial port (`serial:///dev/ttyUSB0?baud=115200`), through
`pyserial`.

The sensor writes one sample per line: its channels as numbers separated by commas, spaces,
tabs or semicolons (what an Arduino-style `println` of readings gives). A serial line has no
clock and no metadata: samples are timed by their count at the model's sampling rate, and a
line that is not one sample of the model's channel count (noise on the wire, a partial line
at connection) is a lost sample — counted, logged once a while, and seen as a gap in the
sample clock. Silence for `stream.timeout_s` is a disconnect (the reader reopens the port).
"""

from __future__ import annotations

import logging
import re
from typing import Any

import numpy as np

from stream.signals import PULL_TIMEOUT_S, LiveSampleFrames
from stream.sources import SourceError

logger = logging.getLogger(__name__)

_SEPARATORS = re.compile(r"[,;\s]+")
DEFAULT_BAUD = 115200


def import_serial() -> Any:
    try:
        import serial
    except ImportError:
        raise SourceError("serial:// needs pyserial: pip install 'actstream[signals]'") from None
    return serial


def parse_sample(line: bytes, channels: int) -> np.ndarray | None:
    """One line → (channels,) float32, or None when it is not one sample of that width."""
    text = line.decode("ascii", "replace").strip()
    if not text:
        return None
    fields = [f for f in _SEPARATORS.split(text) if f]
    if len(fields) != channels:
        return None
    try:
        values = np.array([float(f) for f in fields], np.float32)
    except ValueError:
        return None
    return values if np.isfinite(values).all() else None


class SerialFrames(LiveSampleFrames):
    """A serial port as a live source of signal frames (no source clock)."""

    def connect(self) -> None:
        serial = import_serial()
        self.count = 0  # samples (kept or lost) since the port was opened
        self.lost = 0
        self._partial = b""
        try:
            self.port = serial.Serial(
                self.spec.params["path"],
                baudrate=int(self.spec.params["baud"]),
                timeout=PULL_TIMEOUT_S,
            )
        except serial.SerialException as exc:
            raise OSError(str(exc).split(":")[0] or str(exc)) from None

    def pull(self) -> tuple[np.ndarray, np.ndarray, bool] | None:
        data = self.port.read(max(1, self.port.in_waiting))
        if not data:
            return None
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()  # the unfinished last line waits for its end
        if len(self._partial) > 4096:  # no newline at all: not a sample stream
            self._partial = b""
        period = 1.0 / self.framing.sample_rate_hz
        samples, stamps = [], []
        for line in lines:
            x = parse_sample(line, self.framing.channels)
            if x is not None:
                samples.append(x)
                stamps.append(self.count * period)
            elif line.strip():
                self.lost += 1
                if self.lost in (1, 10, 100) or self.lost % 1000 == 0:
                    logger.warning(
                        "%s: %d line(s) that are not a sample of %d numbers (latest %r)",
                        self.spec.display,
                        self.lost,
                        self.framing.channels,
                        line[:80],
                    )
            if x is not None or line.strip():
                self.count += 1
        shape = (len(samples), self.framing.channels)
        return np.array(samples, np.float32).reshape(shape), np.array(stamps, np.float64), False

    def close(self) -> None:
        port, self.port = getattr(self, "port", None), None
        if port is not None:
            port.close()
