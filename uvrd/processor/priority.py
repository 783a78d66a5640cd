"""Which task topic a processor takes its next task from.

One topic per priority.  The highest priority with a backlog goes first; so
that a steady stream of high-priority work cannot starve the rest, every
``FAIR_EVERY``-th pick made while lower levels wait goes to the level that
was served longest ago.  The choice is applied by pausing every other task
topic's partitions before the poll.  With fair share, the records a processor read ahead
(read_ahead.py) count as backlog too, and the level chosen is the one its next task comes from.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection

from kafka import TopicPartition

FAIR_EVERY = 4
BACKLOG_TTL_S = 1.0  # an idle worker re-reads end offsets at most this often


class PriorityChooser:
    def __init__(self, topics: dict[str, int],
                 ends: Callable[[Collection[TopicPartition]], dict[TopicPartition, int]] | None = None):
        """*ends*: where partitions end now, if not asked of the group member's consumer (fair share:
        kafka/partition_ends.py says why)."""
        self.topics = topics  # topic -> priority
        self._ends = ends
        self._last_served: dict[int, float] = {}
        self._unfair_picks = 0
        self._backlog: dict[int, int] = {}
        # The backlog per level at the last choice, records read ahead included: whether a pick
        # passed over a lower level is judged on it (a record read ahead is past the consumer's
        # position, so the offsets alone would not show that it waits).
        self._waiting: dict[int, int] = {}
        self._checked = float("-inf")

    def served(self, topic: str) -> None:
        """A record of *topic* is being handled: its level was picked."""
        level = self.topics.get(topic)
        if level is None:
            return
        if any(count and other > level for other, count in self._waiting.items()):
            # A lower level's turn, taken: the count starts again.  Reset here, when the turn is
            # taken, not when it is chosen: the chosen level's record may not come in that poll
            # (with fair share its partition was paused until then), and the turn stays owed.
            self._unfair_picks = 0
        elif any(count and other < level for other, count in self._waiting.items()):
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
            return min(waiting, key=lambda level: (self._last_served.get(level, float("-inf")), -level))
        return max(waiting)

    def apply(self, consumer, held: dict[str, int] | None = None) -> int | None:
        """Pause every task topic's partitions but the chosen level's; the level chosen, or None if
        nothing waits (every partition resumed: take whatever comes first).  *held*: records of each
        topic read ahead and not yet started, which the consumer's position has passed."""
        assigned = consumer.assignment()
        if not assigned:
            return None
        if time.monotonic() - self._checked > BACKLOG_TTL_S:
            self._backlog = self._read_backlog(consumer, assigned)
            self._checked = time.monotonic()
        backlog = dict(self._backlog)
        for topic, count in (held or {}).items():
            if topic in self.topics:
                backlog[self.topics[topic]] = backlog.get(self.topics[topic], 0) + count
        self._waiting = backlog
        level = self.choose(backlog)
        if level is None:
            consumer.resume(*assigned)  # nothing waits: take whatever comes first
            return None
        chosen = [tp for tp in assigned if self.topics.get(tp.topic) == level]
        consumer.pause(*[tp for tp in assigned if tp not in chosen])
        consumer.resume(*chosen)
        return level

    def _read_backlog(self, consumer, assigned) -> dict[int, int]:
        ends = self._ends(assigned) if self._ends is not None else consumer.end_offsets(list(assigned))
        backlog: dict[int, int] = {}
        for tp in assigned:
            level = self.topics[tp.topic]
            # An end the broker did not give counts nothing: the next read, a second later, may.
            backlog[level] = backlog.get(level, 0) + max(0, ends.get(tp, 0) - consumer.position(tp))
        return backlog
