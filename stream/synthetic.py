"""Procedural action videos whose actions are defined by motion, not by appearance.

Each scene has actors (random shape, colour and size) that idle with slow random drift, and
from time to time perform one of the action classes below for 0.5-8 s. Actors are independent,
so actions of different actors may overlap in time. Distractor objects drift but never act;
the background is a drifting texture under slowly changing light, with sensor noise.

Everything is a pure function of (seed, time): `render(t_s)` can draw any instant, and
`segments()` lists the ground-truth actions. The live `synthetic://` source and the training
data generator both use this module.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np

# Each class is a motion pattern of the actor's body or arm; none changes what the actor is.
CLASSES: tuple[str, ...] = ("jump", "spin", "wave", "pulse", "flash", "dash")
MIN_ACTION_S = 0.5
MAX_ACTION_S = 8.0


@dataclass(frozen=True, slots=True)
class ActionSegment:
    """One ground-truth action: [start_s, end_s) of `label`, performed by actor `actor`."""

    start_s: float
    end_s: float
    label: str
    actor: int


@dataclass(frozen=True, slots=True)
class _Actor:
    shape: str  # "disc" or "square"
    color: tuple[float, float, float]
    radius: float  # fraction of the frame's shorter side
    home: tuple[float, float]  # idle centre, fractions of width and height
    drift: tuple[tuple[float, float, float], ...]  # (amplitude, angular rate, phase) terms
    arm_length: float


class SyntheticScene:
    """A deterministic, endless scene.

    Args:
        seed: everything (actors, schedule, texture, noise) follows from it.
        width, height: frame size in pixels.
        num_actors: actors that perform actions.
        num_distractors: objects that move but never act.
        idle_s: range of idle time between two actions of one actor.
        duration_s: if set, no action starts after it and none runs past it.
        classes: the class names actions are drawn from (a prefix of `CLASSES` is typical).
        noise: standard deviation of per-pixel noise, in grey levels.
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        width: int = 64,
        height: int = 64,
        num_actors: int = 2,
        num_distractors: int = 1,
        idle_s: tuple[float, float] = (1.0, 4.0),
        duration_s: float | None = None,
        classes: tuple[str, ...] = CLASSES,
        noise: float = 3.0,
    ) -> None:
        unknown = set(classes) - set(CLASSES)
        if unknown or not classes:
            raise ValueError(f"classes must be a non-empty subset of {CLASSES}, got {classes}")
        if width < 8 or height < 8:
            raise ValueError(f"frame must be at least 8x8, got {width}x{height}")
        self.seed, self.width, self.height = seed, width, height
        self.classes = classes
        self.idle_s = idle_s
        self.duration_s = duration_s
        self.noise = noise
        rng = random.Random(seed)
        self._actors = [self._make_actor(rng, i, num_actors) for i in range(num_actors)]
        self._distractors = [
            self._make_actor(rng, i, num_distractors) for i in range(num_distractors)
        ]
        self._schedule_rngs = [random.Random(rng.getrandbits(64)) for _ in self._actors]
        self._schedules: list[list[ActionSegment]] = [[] for _ in self._actors]
        self._scheduled_until = [rng.uniform(0.3, 2.0) for _ in self._actors]
        self._texture_seed = rng.getrandbits(32)
        self._light = (rng.uniform(0.05, 0.15), rng.uniform(0.05, 0.2), rng.uniform(0, 6.28))
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        self._xx, self._yy = xx, yy
        self._texture = self._make_texture()

    # ---- scene construction -------------------------------------------------------------
    @staticmethod
    def _make_actor(rng: random.Random, i: int, n: int) -> _Actor:
        lane = (i + 0.5) / max(n, 1)
        return _Actor(
            shape=rng.choice(("disc", "square")),
            color=(rng.uniform(0.3, 1), rng.uniform(0.3, 1), rng.uniform(0.3, 1)),
            radius=rng.uniform(0.10, 0.14),
            home=(rng.uniform(0.25, 0.75), 0.25 + 0.5 * lane),
            drift=tuple(
                (rng.uniform(0.01, 0.04), rng.uniform(0.2, 0.9), rng.uniform(0, 6.28))
                for _ in range(4)
            ),
            arm_length=rng.uniform(1.4, 1.9),
        )

    def _make_texture(self) -> np.ndarray:
        rng = np.random.default_rng(self._texture_seed)
        h, w = self.height * 2, self.width * 2
        tex = np.zeros((h, w, 3), np.float32)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        for _ in range(6):
            fx, fy = rng.uniform(0.5, 4, 2) * 2 * np.pi / np.array([w, h])
            phase = rng.uniform(0, 2 * np.pi)
            tex += np.sin(fx * xx + fy * yy + phase)[..., None] * rng.uniform(0.02, 0.06, 3)
        return tex + rng.uniform(0.15, 0.35, 3).astype(np.float32)

    # ---- ground truth ---------------------------------------------------------------------
    def _extend(self, actor: int, until_s: float) -> None:
        rng = self._schedule_rngs[actor]
        sched = self._schedules[actor]
        while self._scheduled_until[actor] <= until_s:
            start = self._scheduled_until[actor]
            dur = rng.uniform(MIN_ACTION_S, MAX_ACTION_S)
            label = rng.choice(self.classes)
            gap = rng.uniform(*self.idle_s)
            end = start + dur
            if self.duration_s is not None and end > self.duration_s:
                self._scheduled_until[actor] = math.inf
                break
            sched.append(ActionSegment(round(start, 4), round(end, 4), label, actor))
            self._scheduled_until[actor] = end + gap

    def segments(self, until_s: float) -> list[ActionSegment]:
        """Ground-truth actions that start before `until_s`, sorted by start."""
        out = []
        for a in range(len(self._actors)):
            self._extend(a, until_s)
            out.extend(s for s in self._schedules[a] if s.start_s < until_s)
        return sorted(out, key=lambda s: (s.start_s, s.actor))

    def _active(self, actor: int, t_s: float) -> ActionSegment | None:
        self._extend(actor, t_s)
        for seg in reversed(self._schedules[actor]):
            if seg.start_s <= t_s < seg.end_s:
                return seg
            if seg.end_s <= t_s:
                return None
        return None

    # ---- rendering -----------------------------------------------------------------------
    def render(self, t_s: float) -> np.ndarray:
        """The frame at stream time `t_s`: uint8 array of shape (H, W, 3), RGB."""
        h, w = self.height, self.width
        ox = int((0.5 + 0.5 * math.sin(0.07 * t_s)) * (w - 1))
        oy = int((0.5 + 0.5 * math.cos(0.05 * t_s)) * (h - 1))
        img = self._texture[oy : oy + h, ox : ox + w].copy()
        amp, rate, phase = self._light
        img *= 1.0 + amp * math.sin(rate * t_s + phase)
        for actor in self._distractors:
            self._draw_actor(img, actor, t_s, None, distractor=True)
        for i, actor in enumerate(self._actors):
            self._draw_actor(img, actor, t_s, self._active(i, t_s), distractor=False)
        if self.noise > 0:
            # Noise is a pure function of (seed, frame time) so that frames are reproducible.
            key = (self.seed * 1_000_003 + int(round(t_s * 1000))) & 0xFFFFFFFF
            img += (
                np.random.default_rng(key)
                .normal(0, self.noise / 255.0, img.shape)
                .astype(np.float32)
            )
        return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)

    def _draw_actor(
        self, img: np.ndarray, a: _Actor, t_s: float, seg: ActionSegment | None, distractor: bool
    ) -> None:
        s = min(self.width, self.height)
        cx = (
            a.home[0] * self.width
            + sum(amp * math.sin(r * t_s + p) for amp, r, p in a.drift[:2]) * s
        )
        cy = (
            a.home[1] * self.height
            + sum(amp * math.sin(r * t_s + p) for amp, r, p in a.drift[2:]) * s
        )
        radius = a.radius * s
        angle = 0.3 * math.sin(0.4 * t_s + a.drift[0][2])  # body orientation while idle
        arm = -math.pi / 2 + 0.25 * math.sin(0.9 * t_s + a.drift[1][2])  # arm up, idle wobble
        gain = 1.0
        if distractor:
            cx += 0.15 * s * math.sin(0.5 * t_s + a.drift[3][2])
        elif seg is not None:
            u = t_s - seg.start_s  # time into the action
            if seg.label == "jump":
                cy -= 0.22 * s * abs(math.sin(math.pi * u / 0.6))
            elif seg.label == "spin":
                angle += 2 * math.pi * 1.5 * u
                arm += 2 * math.pi * 1.5 * u
            elif seg.label == "wave":
                arm = -math.pi / 2 + 1.1 * math.sin(2 * math.pi * 2.0 * u)
            elif seg.label == "pulse":
                radius *= 1.0 + 0.45 * math.sin(2 * math.pi * 1.5 * u)
            elif seg.label == "flash":
                gain = 1.8 if int(u * 8) % 2 == 0 else 0.35
            elif seg.label == "dash":
                span = 0.6 * self.width
                phase = (u * 1.2 * self.width / span) % 2.0
                cx = cx - span / 2 + span * (phase if phase < 1 else 2 - phase)
        color = np.array(a.color, np.float32) * gain
        dx, dy = self._xx - cx, self._yy - cy
        ca, sa = math.cos(angle), math.sin(angle)
        u_, v_ = ca * dx + sa * dy, -sa * dx + ca * dy
        if a.shape == "disc":
            dist = np.sqrt(u_ * u_ + v_ * v_) - radius
        else:
            dist = np.maximum(np.abs(u_), np.abs(v_)) - radius * 0.85
        _blend(img, np.clip(0.5 - dist, 0.0, 1.0), color)
        # The arm: a thick segment from the centre, pointing along `arm`.
        ex, ey = math.cos(arm), math.sin(arm)
        along = np.clip(dx * ex + dy * ey, 0.0, a.arm_length * radius)
        px, py = dx - along * ex, dy - along * ey
        arm_dist = np.sqrt(px * px + py * py) - max(1.2, 0.3 * radius)
        _blend(img, np.clip(0.5 - arm_dist, 0.0, 1.0), color * 0.6)


def _blend(img: np.ndarray, alpha: np.ndarray, color: np.ndarray) -> None:
    img *= 1.0 - alpha[..., None]
    img += alpha[..., None] * color
