"""Cancellation requests, kept in Kafka: a compacted topic keyed by task_uuid.

``uvrd api`` appends a request (``DELETE /v1/tasks/<uuid>``); every processor and api instance
reads the whole topic, so a request holds whichever host has the task, across restarts.  The
processor that settles a task whose cancellation was requested also writes the key's tombstone
in the same commit, so compaction keeps the topic as small as the set of tasks still open.
"""

from __future__ import annotations

import json
import threading

from uvrd import messages
from uvrd.config import KafkaConfig
from uvrd.kafka.commit_mode import OutRecord
from uvrd.kafka.topic_view import TopicView


def request(topic: str, task_uuid: str) -> tuple[OutRecord, str]:
    """The request's record, and when it was made."""
    at = messages.now_iso()
    return OutRecord(topic, task_uuid.encode(), messages.encode({"task_uuid": task_uuid, "requested_at": at})), at


def tombstone(topic: str, task_uuid: str) -> OutRecord:
    return OutRecord(topic, task_uuid.encode(), None)


class Cancellations:
    """Which tasks have a cancellation request, and since when, from a background reader."""

    def __init__(self, kafka_config: KafkaConfig, topic: str):
        self.topic = topic
        self._requested: dict[str, str] = {}
        self._lock = threading.Lock()
        # A deployment made before cancellations existed may not have the topic yet: no request
        # can be in it, and work goes on (the reader says so in the log and keeps looking).
        self._view = TopicView(kafka_config, topic, self._fold, missing_is_empty=True)

    def start(self) -> "Cancellations":
        self._view.start()
        return self

    def stop(self) -> None:
        self._view.stop(timeout=1.0)

    @property
    def caught_up(self) -> bool:
        return self._view.caught_up

    def requested_at(self, task_uuid: str) -> str | None:
        with self._lock:
            return self._requested.get(task_uuid)

    def note(self, task_uuid: str, at: str) -> None:
        """A request this process wrote itself, before the reader sees it come back."""
        with self._lock:
            self._requested.setdefault(task_uuid, at)

    def _fold(self, rec) -> None:
        key, raw = rec.key, rec.value
        try:
            task_uuid = key.decode()
        except (AttributeError, UnicodeDecodeError):
            return
        if raw is None:  # the tombstone of a settled task
            with self._lock:
                self._requested.pop(task_uuid, None)
            return
        try:
            at = json.loads(raw)["requested_at"]
        except (TypeError, ValueError, KeyError):
            return  # written only by uvrd; an unreadable record cancels nothing
        with self._lock:
            self._requested.setdefault(task_uuid, str(at))
