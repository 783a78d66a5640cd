"""Whose task runs next among the API keys that have tasks waiting: deficit round robin by audio seconds.

Why turns and not offset order: a key that queues 200 long files would otherwise hold every other
key's next file behind all 200.  With turns, a key that starts waiting joins the back of the line
and waits at most one turn of each key ahead of it.

Why audio seconds and not one task per turn: a separation's time grows with its input's length, so
a key of ten-minute files served one task per turn would take ten times the processor's time of a
key of one-minute files.  Each key's turn is worth ``QUANTUM_SECONDS`` of audio more than what it
has left over (its deficit): it runs its tasks while the next one fits in what it has, and keeps the
rest for its next turn.  Over a flood, every key kept waiting is served the same audio seconds, to
within one task's length plus a quantum; a key of short tasks gets more tasks, not more seconds.

A task's length is what the api measured from its header (``audio_seconds`` in the task message,
api/quota_gate.py; one whose header states no length counts as ``processor.max_audio_seconds``, as
for the key's quota).  One without it (queued before the api sent it, or by another producer) counts as one
quantum: a line of such tasks takes turns one task each, as plain round robin does.  A task counts
at least ``MIN_TASK_SECONDS``, so that a flood of near-empty files cannot run without end in one
turn: each still costs the processor its fixed part (the input fetched, the model run, the stems
stored).

Tasks without a key (from before keys, or ``POST /generate``) share one line place, under ``NO_KEY``
(no key's name is empty: keys/record.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

Lane = str  # an API key's name, or NO_KEY
NO_KEY: Lane = ""

# What one turn is worth, in audio seconds.  A key that starts waiting waits at most this much of each
# other key's audio per turn: a minute would let a key of one-second clips run sixty of them ahead of
# it.  Smaller only makes turns shorter (more keys visited before one fits; the rounds no task fits in
# are counted at once), and a task longer than it waits as many rounds as it needs.
QUANTUM_SECONDS = 10.0
MIN_TASK_SECONDS = 1.0


def cost(seconds: float | None, quantum: float = QUANTUM_SECONDS) -> float:
    """What a task of *seconds* of audio (None: unknown) takes from its key's turns."""
    if seconds is None or not math.isfinite(seconds):
        return quantum
    return max(seconds, MIN_TASK_SECONDS)


class KeyTurns:
    def __init__(self, quantum: float = QUANTUM_SECONDS) -> None:
        self.quantum = quantum
        self._line: list[Lane] = []  # the keys waiting, the one whose turn is now or next first
        self._deficit: dict[Lane, float] = {}  # the audio seconds each waiting key may still run
        self._in_turn: Lane | None = None  # the line's first key once its turn has begun

    def next(self, waiting: Mapping[Lane, float | None]) -> Lane | None:
        """The key whose task runs next among *waiting* (each key with a task to run now, and that
        task's audio seconds: None if unknown); None if none waits.  The key is charged its task's
        :func:`cost`.

        A key that no longer waits leaves the line with its deficit, and one that starts waiting
        joins at its back with none: a key cannot save up turns while it has nothing queued."""
        self._line = [lane for lane in self._line if lane in waiting]
        self._deficit = {lane: d for lane, d in self._deficit.items() if lane in waiting}
        # In *waiting*'s order (the window's: the order each key's first task was read), so that keys
        # that start waiting together take turns in the order they arrived.
        self._line += [lane for lane in waiting if lane not in self._line]
        if not self._line:
            self._in_turn = None
            return None
        if self._in_turn != self._line[0]:
            self._in_turn = None
        costs = {lane: cost(waiting[lane], self.quantum) for lane in self._line}
        passed = 0  # keys whose turn ended in a row without a task run
        while True:
            lane = self._line[0]
            if self._in_turn != lane:
                self._in_turn = lane
                self._deficit[lane] = self._deficit.get(lane, 0.0) + self.quantum
            if costs[lane] <= self._deficit[lane]:
                self._deficit[lane] -= costs[lane]
                if self._deficit[lane] < MIN_TASK_SECONDS:
                    # No task could fit in what is left: its turn is over now, so that a key that
                    # starts waiting meanwhile joins the line behind it.
                    self._line.append(self._line.pop(0))
                    self._in_turn = None
                return lane
            self._line.append(self._line.pop(0))  # its next task does not fit: its turn is over
            self._in_turn = None
            passed += 1
            if passed == len(self._line):
                # A whole round ran nothing (every next task is longer than its key's deficit): the
                # rounds until the first one fits would run nothing either, and are counted at once
                # rather than looped through (a 12-hour task is 4320 rounds of 10 s).
                rounds = min(math.ceil((costs[k] - self._deficit[k]) / self.quantum) for k in self._line)
                for k in self._line:
                    self._deficit[k] += (rounds - 1) * self.quantum
                passed = 0

    def refund(self, lane: Lane, seconds: float | None) -> None:
        """A task of *lane* handed out by :meth:`next` did not run and waits again: its cost goes
        back to its key (if it still waits), and its turn resumes at the head of the line to run it:
        it is charged once, when it runs, and its turn is not lost to the task that did not."""
        if lane in self._deficit and lane in self._line:
            self._deficit[lane] += cost(seconds, self.quantum)
            self._line.remove(lane)
            self._line.insert(0, lane)
            self._in_turn = lane
