"""Whose task runs next among the API keys that have tasks waiting: each key in its turn (round robin).

Why turns and not offset order: a key that queues 200 long files would otherwise hold every other
key's next file behind all 200.  With turns, a key that starts waiting joins the back of the line
and waits at most one task of each key ahead of it.

Why one task is one turn (not deficit round robin by audio seconds): the task message does not
carry its input's length, and reading each waiting input's header would fetch it (a GET per task
from a bucket) only to order the queue.  A key of long files therefore gets more of the processor's
time than a key of short ones, but never more than every other key's next task.

Tasks without a key (from before keys, or ``POST /generate``) share one turn, under ``NO_KEY`` (no
key's name is empty: keys/record.py).
"""

from __future__ import annotations

from collections.abc import Collection

Lane = str  # an API key's name, or NO_KEY
NO_KEY: Lane = ""


class KeyTurns:
    def __init__(self) -> None:
        self._line: list[Lane] = []  # the keys waiting, the one whose turn is next first

    def next(self, waiting: Collection[Lane]) -> Lane | None:
        """The key whose turn it is among *waiting* (the keys that have a task to run now), which
        then goes to the back of the line; None if none waits.

        A key that no longer waits leaves the line, and one that starts waiting joins at its back:
        a key cannot save up turns while it has nothing queued."""
        self._line = [lane for lane in self._line if lane in waiting]
        # In *waiting*'s order (the window's: the order each key's first task was read), so that keys
        # that start waiting together take turns in the order they arrived.
        self._line += [lane for lane in waiting if lane not in self._line]
        if not self._line:
            return None
        lane = self._line.pop(0)
        self._line.append(lane)
        return lane

