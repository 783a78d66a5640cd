"""Cancellation requests, kept in Kafka: a compacted topic keyed by task_uuid.

``uvrd api`` appends a request (``DELETE /v1/tasks/<uuid>``); every processor and api instance
reads the whole topic, so a request holds whichever host has the task, across restarts.  The
processor that settles a task whose cancellation was requested also writes the key's tombstone
in the same commit, so compaction keeps the topic as small as the set of tasks still open.
"""

from __future__ import annotations

import json

from uvrd import messages
from uvrd.config import KafkaConfig
from uvrd.kafka.commit_mode import OutRecord
from uvrd.kafka.topic_view import TopicBoard


def request(topic: str, task_uuid: str) -> tuple[OutRecord, str]:
    """The request's record, and when it was made."""
    at = messages.now_iso()
    return OutRecord(topic, task_uuid.encode(), messages.encode({"task_uuid": task_uuid, "requested_at": at})), at


def tombstone(topic: str, task_uuid: str) -> OutRecord:
    return OutRecord(topic, task_uuid.encode(), None)


class Cancellations(TopicBoard):
    """Which tasks have a cancellation request, and since when, from a background reader.  A
    deployment made before cancellations existed may not have the topic yet: no request can be in
    it, and work goes on (the reader says so in the log and keeps looking)."""

    def __init__(self, kafka_config: KafkaConfig, topic: str):
        super().__init__(kafka_config, topic)
        self._requested: dict[str, str] = {}

    def requested_at(self, task_uuid: str) -> str | None:
        with self._lock:
            return self._requested.get(task_uuid)

    def note(self, task_uuid: str, at: str) -> None:
        """A request this process wrote itself, before the reader sees it come back."""
        with self._lock:
            self._requested.setdefault(task_uuid, at)

    def fold(self, rec) -> None:
        try:
            task_uuid = rec.key.decode()
        except (AttributeError, UnicodeDecodeError):
            return
        if rec.value is None:  # the tombstone of a settled task
            with self._lock:
                self._requested.pop(task_uuid, None)
            return
        try:
            at = json.loads(rec.value)["requested_at"]
        except (TypeError, ValueError, KeyError):
            return  # written only by uvrd; an unreadable record cancels nothing
        with self._lock:
            self._requested.setdefault(task_uuid, str(at))
