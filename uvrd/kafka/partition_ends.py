"""Where partitions end now, asked through a consumer of its own rather than the group member's.

Why: a broker answers one connection's requests in order, and a consumer that has read everything
(a fair-share processor reads ahead to the end, processor/read_ahead.py) always has a fetch waiting
there, which the broker holds for up to ``fetch.max.wait.ms`` (500 ms) when no record comes.  An
end-offsets question on that consumer waits behind it: half a second before every task.  A
consumer of its own has no fetch in the way.

Only the daemon's main thread asks (kafka-python's consumers are not thread-safe).
"""

from __future__ import annotations

from collections.abc import Collection

import structlog
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from uvrd.config import KafkaConfig
from uvrd.kafka import clients
from uvrd.kafka.end_offsets import QUESTION_CONSUMER, HighWatermarks
from uvrd.runtime.deadline import Deadline

log = structlog.get_logger("uvrd.kafka")

WAIT_MS = 5000  # the longest a question holds the loop


class PartitionEnds:
    def __init__(self, kafka_config: KafkaConfig) -> None:
        self.kafka_config = kafka_config
        self._consumer: KafkaConsumer | None = None
        self._marks: HighWatermarks | None = None

    def now(self, partitions: Collection[TopicPartition]) -> dict[TopicPartition, int]:
        """Each partition's end offset, its high watermark (end_offsets.py says why from a fetch); {} if
        the broker did not answer within WAIT_MS."""
        if not partitions:
            return {}
        try:
            if self._marks is None:
                self._consumer = clients.consumer(self.kafka_config, group_id=None, bootstrap_timeout_ms=WAIT_MS,
                                                  request_timeout_ms=WAIT_MS, **QUESTION_CONSUMER)
                self._marks = HighWatermarks(self._consumer)
            return self._marks.ends(list(partitions), Deadline.after(WAIT_MS / 1000))
        except KafkaError as e:
            log.warning("partitions' end offsets not read", error=str(e) or type(e).__name__)
            return {}

    def close(self) -> None:
        consumer, self._consumer, self._marks = self._consumer, None, None
        if consumer is not None:
            consumer.close(autocommit=False)
