"""How long to wait before trying again: exponential, capped, optionally with a total budget.

One type for every retry loop in uvrd (the broker connection, a commit, a task waiting for its
host), so that each says only its numbers.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    first: float
    most: float
    limit: float = float("inf")  # total seconds of waiting after which exhausted() says so
    waited: float = field(default=0.0, init=False)
    _next: float = field(default=0.0, init=False, repr=False)

    def __post_init__(self) -> None:
        self._next = self.first

    def next(self) -> float:
        """The wait before the next try; each one doubles, up to *most*."""
        wait = self._next
        self.waited += wait
        self._next = min(wait * 2, self.most)
        return wait

    def reset(self) -> None:
        self.waited, self._next = 0.0, self.first

    def exhausted(self) -> bool:
        return self.waited >= self.limit

    def ceiling(self, attempt: int) -> float:
        """The *attempt*-th wait (1-based) of a fresh backoff."""
        # 2.0: int ** int is Any to mypy (a negative power makes a float).
        return min(self.most, self.first * 2.0 ** (attempt - 1))

    def jittered(self, attempt: int, rng: random.Random | None = None) -> float:
        """The *attempt*-th wait, drawn from its upper half: clients that failed together spread out,
        and none comes back sooner than half the plan."""
        ceiling = self.ceiling(attempt)
        return (rng or random).uniform(ceiling / 2, ceiling)
