"""Reconnect back-off: capped exponential with jitter, a pure policy with an injected RNG."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class Backoff:
    """Delay before reconnect attempt `attempt` (0 for the first retry).

    delay = initial_s * factor ** attempt, scaled by a random factor in [1 - jitter,
    1 + jitter] so that many cameras behind one switch do not retry in step, then capped at
    max_s: never longer than max_s (at the cap the delays spread over
    [max_s * (1 - jitter), max_s]).
    """

    initial_s: float = 0.5
    max_s: float = 10.0
    factor: float = 2.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if self.initial_s <= 0 or self.max_s < self.initial_s:
            raise ValueError(f"need 0 < initial_s <= max_s, got {self.initial_s}, {self.max_s}")
        if self.factor < 1 or not 0 <= self.jitter < 1:
            raise ValueError(
                f"need factor >= 1 and 0 <= jitter < 1, got {self.factor}, {self.jitter}"
            )

    def delay_s(self, attempt: int, rng: random.Random) -> float:
        base = min(self.max_s, self.initial_s * self.factor ** min(attempt, 64))
        return min(self.max_s, base * (1.0 + self.jitter * (2.0 * rng.random() - 1.0)))
