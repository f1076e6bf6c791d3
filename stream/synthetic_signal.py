"""Synthetic WiFi-CSI-like recordings: channel amplitudes over subcarriers whose pattern
depends on the activity going on, for tests and the signal demo (no public CSI set ships in a
package).

What a CSI amplitude stream looks like, and what is modelled: a static multipath profile
across subcarriers (smooth in frequency), slow drift (temperature, people far away), sensor
noise, and, while someone acts, a modulation whose rate, depth, waveform and subcarrier
profile depend on the activity (body parts at different speeds shift different paths). The
classes are the seed's seven (run, walk, jump, wave, bend, stand, sit); one person acts at a
time, with idle gaps, as in the seed's recordings.

Everything is a pure function of the seed: `samples()` and `segments()` of the same
`SyntheticCsi` are always the same.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

CSI_CLASSES: tuple[str, ...] = ("run", "walk", "jump", "wave", "bend", "stand", "sit")


@dataclass(frozen=True, slots=True)
class _Pattern:
    rate_hz: float  # modulation rate
    depth: float  # amplitude of the modulation, relative to the noise
    centre: float  # subcarrier profile: centre and width, fractions of the band
    width: float
    wave: str  # "sine", "burst" (short pulses), "step" (a level change that holds)


_PATTERNS = {
    "run": _Pattern(3.0, 2.2, 0.35, 0.30, "sine"),
    "walk": _Pattern(1.6, 1.6, 0.45, 0.35, "sine"),
    "jump": _Pattern(1.1, 3.0, 0.55, 0.45, "burst"),
    "wave": _Pattern(2.2, 1.4, 0.80, 0.15, "sine"),
    "bend": _Pattern(0.4, 2.4, 0.20, 0.20, "sine"),
    "stand": _Pattern(0.0, 2.0, 0.65, 0.25, "step"),
    "sit": _Pattern(0.0, -2.0, 0.30, 0.25, "step"),
}


class SyntheticCsi:
    """One recording of `channels` subcarrier amplitudes at `sample_rate_hz`.

    Args:
        seed: everything follows from it.
        duration_s: length of the recording.
        channels: subcarriers (30 in the seed's data).
        sample_rate_hz: samples per second (100 in the seed's data).
        action_s, idle_s: ranges of an action's and a gap's length.
        noise: standard deviation of the per-sample noise.
        classes: the classes actions are drawn from.
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        duration_s: float = 60.0,
        channels: int = 30,
        sample_rate_hz: float = 100.0,
        action_s: tuple[float, float] = (1.5, 6.0),
        idle_s: tuple[float, float] = (1.0, 4.0),
        noise: float = 0.3,
        classes: tuple[str, ...] = CSI_CLASSES,
    ) -> None:
        unknown = set(classes) - set(CSI_CLASSES)
        if unknown or not classes:
            raise ValueError(f"classes must be a non-empty subset of {CSI_CLASSES}, got {classes}")
        if channels < 1 or sample_rate_hz <= 0 or duration_s <= 0:
            raise ValueError("need channels >= 1, sample_rate_hz > 0 and duration_s > 0")
        self.seed, self.duration_s, self.channels = seed, duration_s, channels
        self.sample_rate_hz, self.noise, self.classes = sample_rate_hz, noise, classes
        rng = np.random.default_rng(seed)
        self._segments: list[tuple[float, float, str]] = []
        t = float(rng.uniform(*idle_s))
        while True:
            dur = float(rng.uniform(*action_s))
            if t + dur > duration_s:
                break
            self._segments.append((round(t, 3), round(t + dur, 3), str(rng.choice(classes))))
            t += dur + float(rng.uniform(*idle_s))
        self._gain = float(rng.uniform(0.8, 1.25))  # this room's sensitivity
        self._shift = float(rng.uniform(-0.08, 0.08))  # and where the paths fall
        self._rng_seed = int(rng.integers(2**31))

    def segments(self) -> list[tuple[float, float, str]]:
        """The ground truth: (start_s, end_s, label), in time order."""
        return list(self._segments)

    def samples(self) -> np.ndarray:
        """The recording: (T, channels) float32, T = duration_s · sample_rate_hz."""
        rng = np.random.default_rng(self._rng_seed)
        n = int(round(self.duration_s * self.sample_rate_hz))
        t = np.arange(n) / self.sample_rate_hz
        band = np.linspace(0.0, 1.0, self.channels)
        # static multipath profile: a few smooth ripples across the band
        static = 10.0 + sum(
            rng.uniform(0.5, 2.0)
            * np.sin(2 * math.pi * rng.uniform(0.5, 3) * band + rng.uniform(0, 6.3))
            for _ in range(3)
        )
        drift = np.cumsum(rng.normal(0, 0.004, (n, 1)), axis=0) * (1 + band[None])  # (T, C)
        x = static[None, :] + drift + rng.normal(0, self.noise, (n, self.channels))
        for start, end, label in self._segments:
            p = _PATTERNS[label]
            i0, i1 = int(start * self.sample_rate_hz), int(end * self.sample_rate_hz)
            u = t[i0:i1] - start
            profile = np.exp(-0.5 * ((band - p.centre - self._shift) / p.width) ** 2)
            depth = p.depth * self._gain
            if p.wave == "step":
                ramp = np.clip(u / max(end - start, 1e-3), 0, 1)  # the transition
                wobble = 0.35 * np.sin(2 * math.pi * 2.5 * u) * np.sin(math.pi * ramp)
                x[i0:i1] += (depth * ramp + wobble)[:, None] * profile[None]
                x[i1:] += depth * profile  # the new posture's level holds afterwards
                continue
            phase = 2 * math.pi * p.rate_hz * u
            if p.wave == "burst":
                w = np.maximum(0, np.sin(phase)) ** 4
            else:
                w = np.sin(phase) + 0.3 * np.sin(2 * phase + 1.0)
            x[i0:i1] += depth * w[:, None] * profile[None]
        return x.astype(np.float32)
