"""The dead-letter topic as an operator reads it: every record counted, the latest kept with why
and whence (the ``uvrd-error``, ``uvrd-source`` and ``uvrd-stage`` headers dead_letter() writes).

Read whole by a background reader (read_committed, so a dead letter of an aborted transaction is
not one), because offsets cannot count it: under exactly-once each transaction's commit marker
takes an offset too.
"""

from __future__ import annotations

import collections
import json
import time

from kafka import TopicPartition

from uvrd.config import KafkaConfig
from uvrd.kafka import clients
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
        entry = describe(rec)
        with self._lock:
            self._count += 1
            self._latest.append(entry)


def describe(rec) -> dict:
    """A dead letter's coordinates, task, why (error), whence (source) and the stage that gave up."""
    headers = {k: v.decode("utf-8", "replace") for k, v in (rec.headers or []) if isinstance(v, bytes)}
    task_uuid = None
    try:
        value = json.loads(rec.value)
        task_uuid = value.get("task_uuid") if isinstance(value, dict) else None
    except (TypeError, ValueError):
        pass
    if not isinstance(task_uuid, str):
        task_uuid = rec.key.decode("utf-8", "replace") if rec.key else None
    return {"offset": rec.offset, "partition": rec.partition, "task_uuid": task_uuid,
            "error": headers.get("uvrd-error"), "source": headers.get("uvrd-source"),
            "stage": headers.get("uvrd-stage"), "timestamp_ms": rec.timestamp}


def read_letter(kafka_config: KafkaConfig, topic: str, partition: int, offset: int, timeout_s: float = 10.0) -> dict | None:
    """The dead letter at *partition*/*offset*, described, with the record it copies (``record``: its JSON,
    or its text when it is not JSON); None if there is none there."""
    rec = read_record(kafka_config, topic, partition, offset, timeout_s)
    return None if rec is None else {**describe(rec), "record": _content(rec.value)}


def read_record(kafka_config: KafkaConfig, topic: str, partition: int, offset: int, timeout_s: float = 10.0):
    """The dead-letter record at *partition*/*offset* as Kafka holds it; None if there is none there
    (a transaction marker, an aborted record, past the end)."""
    consumer = clients.consumer(kafka_config, None, enable_auto_commit=False, max_poll_records=10)
    try:
        tp = TopicPartition(topic, partition)
        if partition not in (consumer.partitions_for_topic(topic) or set()):
            return None
        consumer.assign([tp])
        if offset >= consumer.end_offsets([tp])[tp]:
            return None
        consumer.seek(tp, offset)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and consumer.position(tp) <= offset:
            for rec in consumer.poll(timeout_ms=500).get(tp, []):
                if rec.offset == offset:
                    return rec
                if rec.offset > offset:
                    return None
        return None
    finally:
        consumer.close()


def _content(value: bytes | None):
    if not value:
        return None
    try:
        return json.loads(value)
    except ValueError:
        return value.decode("utf-8", "replace")
