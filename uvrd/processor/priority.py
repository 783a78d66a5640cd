"""Which task topic a processor takes its next task from.

One topic per priority.  The highest priority with a backlog goes first; so
that a steady stream of high-priority work cannot starve the rest, every
``FAIR_EVERY``-th pick made while lower levels wait goes to the level that
was served longest ago.  The choice is applied by pausing every other task
topic's partitions before the poll.
"""

from __future__ import annotations

import time

FAIR_EVERY = 4
BACKLOG_TTL_S = 1.0  # an idle worker re-reads end offsets at most this often


class PriorityChooser:
    def __init__(self, topics: dict[str, int]):
        self.topics = topics  # topic -> priority
        self._last_served: dict[int, float] = {}
        self._unfair_picks = 0
        self._fair_level: int | None = None  # the level a fair turn was given to, until it is served
        self._backlog: dict[int, int] = {}
        self._checked = float("-inf")

    def served(self, topic: str) -> None:
        """A record of *topic* is being handled: its level was picked."""
        level = self.topics.get(topic)
        if level is None:
            return
        if level == self._fair_level:
            self._unfair_picks, self._fair_level = 0, None  # the fair turn is taken
        elif any(count and other < level for other, count in self._backlog.items()):
            self._unfair_picks += 1
        self._last_served[level] = time.monotonic()
        self.invalidate()

    def invalidate(self) -> None:
        """The backlog may have changed (a record taken, partitions reassigned)."""
        self._checked = float("-inf")

    def choose(self, backlog: dict[int, int]) -> int | None:
        waiting = [level for level, count in backlog.items() if count > 0]
        if not waiting:
            return None
        if len(waiting) > 1 and self._unfair_picks >= FAIR_EVERY:
            # Kept until a record of that level is served (served()): a poll that brings none yet (the
            # pipeline's, which does not wait for a fetch) must not lose the turn.
            self._fair_level = min(waiting, key=lambda level: (self._last_served.get(level, float("-inf")), -level))
            return self._fair_level
        return max(waiting)

    def apply(self, consumer) -> None:
        assigned = consumer.assignment()
        if not assigned:
            return
        if time.monotonic() - self._checked > BACKLOG_TTL_S:
            self._backlog = self._read_backlog(consumer, assigned)
            self._checked = time.monotonic()
        level = self.choose(self._backlog)
        if level is None:
            consumer.resume(*assigned)  # nothing waits: take whatever comes first
            return
        chosen = [tp for tp in assigned if self.topics.get(tp.topic) == level]
        consumer.pause(*[tp for tp in assigned if tp not in chosen])
        consumer.resume(*chosen)

    def _read_backlog(self, consumer, assigned) -> dict[int, int]:
        ends = consumer.end_offsets(list(assigned))
        backlog: dict[int, int] = {}
        for tp in assigned:
            level = self.topics[tp.topic]
            backlog[level] = backlog.get(level, 0) + max(0, ends[tp] - consumer.position(tp))
        return backlog
