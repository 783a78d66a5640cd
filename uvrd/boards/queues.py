"""How much work waits: each task topic's backlog for the processors' group and the results' for
the uploaders' (no group is joined).

A backlog is counted, not subtracted: under exactly-once each transaction's commit marker takes an
offset, so end − committed would count markers as work.  The records between the group's committed
offset and the end are read (read_committed, as the daemons read them), up to COUNT_CAP.
"""

from __future__ import annotations

import threading
import time

from kafka import KafkaConsumer, TopicPartition

from uvrd.config import Config
from uvrd.kafka import clients

CACHE_S = 1.0
TIMEOUT_MS = 5000
# A backlog longer than this is reported as this many, with "at_least": true.
COUNT_CAP = 10000


class QueueGauge:
    def __init__(self, config: Config):
        self.config = config
        self._consumers: dict[str, KafkaConsumer] = {}
        self._lock = threading.Lock()
        self._cached: tuple[float, dict] = (float("-inf"), {})

    def read(self) -> dict:
        """``{"tasks": [...per priority], "results": {...}, "dead_letters": n}``; KafkaError if the
        broker does not answer."""
        with self._lock:
            at, value = self._cached
            if time.monotonic() - at < CACHE_S:
                return value
            topics = self.config.topics
            tasks = [{"priority": priority, "topic": topic,
                      **self._backlog(self.config.processor.group_id, topic)}
                     for topic, priority in topics.task_topics().items()]
            results = {"topic": topics.results, **self._backlog(self.config.uploader.group_id, topics.results)}
            value = {"tasks": tasks, "results": results}
            self._cached = (time.monotonic(), value)
            return value

    def close(self) -> None:
        with self._lock:
            for consumer in self._consumers.values():
                consumer.close(autocommit=False)
            self._consumers.clear()

    def _backlog(self, group: str, topic: str) -> dict:
        consumer = self._consumer(group)
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        ends = consumer.end_offsets(tps) if tps else {}
        starts = {tp: consumer.committed(tp) for tp in tps}
        starts = {tp: offset if offset is not None else self._start(consumer, tp) for tp, offset in starts.items()}
        count = self._count(starts, ends)
        return {"end": sum(ends.values()), "committed": sum(starts.values()), "backlog": min(count, COUNT_CAP),
                "at_least": count >= COUNT_CAP}

    def _count(self, starts: dict, ends: dict) -> int:
        """The records from *starts* to *ends*, read as the daemons read them (markers are none)."""
        todo = {tp: start for tp, start in starts.items() if start < ends[tp]}
        if not todo:
            return 0
        reader = self._consumer(None)
        reader.assign(list(todo))
        for tp, start in todo.items():
            reader.seek(tp, start)
        count, deadline = 0, time.monotonic() + TIMEOUT_MS / 1000
        while count < COUNT_CAP and any(reader.position(tp) < ends[tp] for tp in todo):
            if time.monotonic() > deadline:
                break  # what was counted so far: a lower bound, as the cap is
            for tp, batch in reader.poll(timeout_ms=200, max_records=COUNT_CAP).items():
                count += sum(1 for rec in batch if rec.offset < ends[tp])
        return count

    @staticmethod
    def _start(consumer: KafkaConsumer, tp: TopicPartition) -> int:
        """Where a group with no commit yet begins: the partition's first offset (auto_offset_reset earliest)."""
        return consumer.beginning_offsets([tp])[tp]

    def _consumer(self, group: str | None) -> KafkaConsumer:
        key = group or ""
        if key not in self._consumers:
            self._consumers[key] = clients.consumer(self.config.kafka, group_id=group, bootstrap_timeout_ms=TIMEOUT_MS,
                                                    max_poll_records=500)
        return self._consumers[key]

