"""A time budget as a value: when it ends, and how much of it is left.

Every wait in uvrd that has a limit (an HTTP exchange, a drain, a retry loop)
takes a :class:`Deadline` rather than a number of seconds, so that the steps of
one budget share it instead of each restarting its own clock.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Deadline:
    at: float  # on the time.monotonic() clock; inf: no limit

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds)

    @classmethod
    def never(cls) -> Deadline:
        return cls(math.inf)

    def remaining(self) -> float:
        """Seconds left, never negative."""
        return max(0.0, self.at - time.monotonic())

    def expired(self) -> bool:
        return time.monotonic() >= self.at

    def cap(self, seconds: float) -> float:
        """*seconds*, or what is left of the budget if that is less."""
        return min(seconds, self.remaining())

    def earlier(self, other: Deadline) -> Deadline:
        return self if self.at <= other.at else other
