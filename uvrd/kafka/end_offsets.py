"""Where a topic's partitions end now, asked of the broker from any thread.

A TopicView's reader owns its consumer (kafka-python's consumers are not thread-safe), so a
request thread that needs the topic's end (the read-your-writes barrier, topic_view.py) asks
through a consumer of its own, one question at a time.
"""

from __future__ import annotations

import threading

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from uvrd.config import KafkaConfig
from uvrd.kafka import clients
from uvrd.runtime.deadline import Deadline

# A question never waits longer than this for the broker, whatever the caller's deadline.
MAX_WAIT_MS = 5000


class EndOffsets:
    def __init__(self, kafka_config: KafkaConfig, topic: str) -> None:
        self.kafka_config = kafka_config
        self.topic = topic
        self._lock = threading.Lock()
        self._consumer: KafkaConsumer | None = None
        self._closed = False

    def now(self, deadline: Deadline) -> dict[int, int] | None:
        """Each partition's end offset (the offset the next record will get), {} for a topic that
        does not exist; None if the broker did not answer before *deadline*.

        The end is the high watermark (read_uncommitted), not the last stable offset: a record
        written outside a transaction after another producer opened one is not readable with
        read_committed until that transaction ends, and a reader that stopped at the last stable
        offset would not have it yet."""
        # Another thread's question takes at most MAX_WAIT_MS: wait for it no longer than that.
        if not self._lock.acquire(timeout=deadline.cap(MAX_WAIT_MS / 1000)):
            return None
        try:
            if self._closed:
                return None
            wait_ms = max(1, int(deadline.cap(MAX_WAIT_MS / 1000) * 1000))
            consumer = self._consumer
            if consumer is None:
                consumer = self._consumer = clients.consumer(
                    self.kafka_config, group_id=None, isolation_level="read_uncommitted",
                    bootstrap_timeout_ms=wait_ms, request_timeout_ms=max(wait_ms, MAX_WAIT_MS))
            partitions = consumer.partitions_for_topic(self.topic)  # empty for a topic that does not exist
            if not partitions:
                return {}
            tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
            ends = consumer.end_offsets(tps, timeout_ms=max(1, int(deadline.cap(MAX_WAIT_MS / 1000) * 1000)))
            return {tp.partition: offset for tp, offset in ends.items()}
        except KafkaError:
            return None
        finally:
            self._lock.release()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            consumer, self._consumer = self._consumer, None
        if consumer is not None:
            consumer.close(autocommit=False)
