"""A one-line progress bar with loss, learning rate and ETA (stderr)."""

from __future__ import annotations

import sys
import time

WIDTH = 100  # a terminal line is redrawn padded to this many characters


def format_duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class Progress:
    """Redraws one line on a terminal; prints a line every `every` updates otherwise."""

    def __init__(
        self, total: int, *, start: int = 0, every: int = 50, stream=None, label: str = "step"
    ) -> None:
        self.total, self.start, self.label = total, start, label
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.every = every
        self.t0 = time.monotonic()

    def update(self, step: int, **values: float) -> None:
        done = step - self.start
        if not self.tty and done % self.every and step != self.total:
            return
        elapsed = time.monotonic() - self.t0
        eta = elapsed / max(done, 1) * (self.total - step)
        parts = " ".join(f"{k} {v:.3g}" for k, v in values.items())
        pct = 100 * step / self.total
        line = f"{self.label} {step}/{self.total} [{pct:3.0f}%] {parts} ETA {format_duration(eta)}"
        if self.tty:
            self.stream.write("\r" + line.ljust(WIDTH))
            if step == self.total:
                self.stream.write("\n")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def note(self, message: str) -> None:
        """A line of its own between bar updates (a validation result), kept on a terminal."""
        self.stream.write(("\r" + " " * WIDTH + "\r" if self.tty else "") + message + "\n")
        self.stream.flush()
