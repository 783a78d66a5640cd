"""A running task's progress on the status topic: frequent and best effort, so outside the commit.

Progress goes out every few seconds for as long as a job runs.  Through the transactional producer
each report would be a transaction, and kafka-python's ``commit_transaction`` waits for the broker
without a bound: a broker restart mid-report would hold the daemon's loop (no membership, no
watchdog ping) until the broker answered.  So progress has a plain producer of its own, and a
send never blocks the loop for more than ``MAX_BLOCK_MS``; a report the broker does not take is
overtaken by the next.  Its records have their own key (``<task_uuid>/progress``): one that a
retry delivers after the task's final state cannot be the last record of the task's key, which
is what compaction keeps.  The final commit writes that key's tombstone.
"""

from __future__ import annotations

import structlog
from kafka import KafkaProducer
from kafka.errors import KafkaError

from uvrd.config import KafkaConfig
from uvrd.kafka import clients, status

log = structlog.get_logger("uvrd.progress")

MAX_BLOCK_MS = 1000
CLOSE_TIMEOUT_S = 1.0


class ProgressFeed:
    def __init__(self, kafka_config: KafkaConfig, topic: str):
        self.kafka_config = kafka_config
        self.topic = topic
        self._producer: KafkaProducer | None = None
        self._complained = False

    def send(self, task_uuid: str, fraction: float, step: str) -> None:
        record = status.progress_record(self.topic, task_uuid, fraction, step)
        try:
            if self._producer is None:
                self._producer = clients.producer(self.kafka_config, acks=1, enable_idempotence=False,
                                                  max_block_ms=MAX_BLOCK_MS, bootstrap_timeout_ms=MAX_BLOCK_MS)
            future = self._producer.send(record.topic, key=record.key, value=record.value)
        except KafkaError as e:
            self._complain(e)
            return
        future.add_errback(self._complain)
        self._complained = False

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=CLOSE_TIMEOUT_S)
            self._producer = None

    def _complain(self, e) -> None:
        if not self._complained:  # once per outage, not once per report
            log.warning("could not publish the task's progress", error=str(e) or type(e).__name__)
            self._complained = True
