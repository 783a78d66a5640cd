"""Which tasks have ended (a result committed), read from the status topic: the processor's mark of a
task it must not run again.

Why the status topic: a task's ended status (succeeded, failed, cancelled) is committed in the same
transaction as its result (processor/settlement.py), so it is there exactly when the result is.
With fair share (processor/read_ahead.py) tasks finish out of offset order, and the committed offset
stays below a task still running: a crash or a rebalance redelivers tasks that already have their
result.  Before it runs a task, the processor reads this board through the topic's end (as it reads
the cancellations) and settles a task that ended without a second result.

A replay (boards/replays.py) runs a task again under a higher replay number: only an end of that
cycle, or a later one, counts.  What is kept is one number per task that ever ended (about 100 bytes
each in memory); the processor reads the topic whole at its start.
"""

from __future__ import annotations

import enum

from kafka.consumer.fetcher import ConsumerRecord

from uvrd import messages
from uvrd.boards.status import ENDED
from uvrd.kafka.topic_view import TopicBoard


class Prior(enum.Enum):
    """What the status topic says of a task about to run."""

    ENDED = "ended"          # its result is committed: settle it without running it again
    NOT_ENDED = "not_ended"  # run it
    UNKNOWN = "unknown"      # the topic could not be read through its end in time: ask again later


class EndedTasks(TopicBoard):
    # The status topic exists wherever a processor commits (boards/topic_check.py checks it at start).
    missing_is_empty = True

    def __init__(self, kafka_config, topic: str) -> None:
        super().__init__(kafka_config, topic)
        self._ended: dict[str, int] = {}  # task_uuid -> the highest replay number that ended

    def ended(self, task_uuid: str, replay: int) -> bool:
        """Whether the task's cycle *replay* (or a later one) ended, as far as the board has read."""
        with self._lock:
            cycle = self._ended.get(task_uuid)
        return cycle is not None and cycle >= replay

    def prior(self, task_uuid: str, replay: int, read_through_end: bool) -> Prior:
        """Whether the task's cycle *replay* ended; *read_through_end*: whether the board was read
        through the topic's end just now (the board alone trails the topic by up to a poll), without
        which only an end it holds already is an answer."""
        if self.ended(task_uuid, replay):
            return Prior.ENDED
        return Prior.NOT_ENDED if read_through_end else Prior.UNKNOWN

    def fold(self, rec: ConsumerRecord) -> None:
        value = messages.json_object(rec.value)
        if value is None or value.get("state") not in ENDED or not isinstance(value.get("task_uuid"), str):
            return  # a progress report, a queued task, or no record of uvrd's
        cycle = messages.replay_of(value)
        with self._lock:
            task_uuid = value["task_uuid"]
            if cycle >= self._ended.get(task_uuid, -1):
                self._ended[task_uuid] = cycle
