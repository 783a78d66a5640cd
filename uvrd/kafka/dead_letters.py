"""The dead-letter topic as an operator reads it: every record counted, the latest kept with why
and whence (the ``uvrd-error``, ``uvrd-source`` and ``uvrd-stage`` headers dead_letter() writes).

Read whole by a background reader (read_committed, so a dead letter of an aborted transaction is
not one), because offsets cannot count it: under exactly-once each transaction's commit marker
takes an offset too.
"""

from __future__ import annotations

import collections
import json

from uvrd.config import KafkaConfig
from uvrd.kafka.topic_view import TopicBoard

# The latest dead letters kept in memory (for listing); the count covers them all.
KEEP = 1000


class DeadLetterBoard(TopicBoard):
    def __init__(self, kafka_config: KafkaConfig, topic: str):
        super().__init__(kafka_config, topic)
        self._count = 0
        self._latest: collections.deque[dict] = collections.deque(maxlen=KEEP)

    def count(self) -> int:
        with self._lock:
            return self._count

    def latest(self, n: int = 50) -> list[dict]:
        with self._lock:
            return list(self._latest)[-n:][::-1]

    def fold(self, rec) -> None:
        headers = {k: v.decode("utf-8", "replace") for k, v in (rec.headers or []) if isinstance(v, bytes)}
        task_uuid = None
        try:
            value = json.loads(rec.value)
            task_uuid = value.get("task_uuid") if isinstance(value, dict) else None
        except (TypeError, ValueError):
            pass
        if not isinstance(task_uuid, str):
            task_uuid = rec.key.decode("utf-8", "replace") if rec.key else None
        entry = {"offset": rec.offset, "partition": rec.partition, "task_uuid": task_uuid,
                 "error": headers.get("uvrd-error"), "source": headers.get("uvrd-source"),
                 "stage": headers.get("uvrd-stage"), "timestamp_ms": rec.timestamp}
        with self._lock:
            self._count += 1
            self._latest.append(entry)
