"""Records that report rather than commit (a task's progress, a worker's heartbeat): frequent and
best effort, so outside the commit.

Through the transactional producer each report would be a transaction, and kafka-python's
``commit_transaction`` waits for the broker without a bound: a broker restart mid-report would
hold the daemon's loop (no membership, no watchdog ping) until the broker answered.  So reports
have a plain producer of its own, and a send never blocks the loop for more than ``MAX_BLOCK_MS``;
a report the broker does not take is overtaken by the next.  A progress record has its own key
(``<task_uuid>/progress``, status.py): one that a retry delivers after the task's final state
cannot be the last record of the task's key, which is what compaction keeps.
"""

from __future__ import annotations

import structlog
from kafka import KafkaProducer
from kafka.errors import KafkaError

from uvrd.config import KafkaConfig
from uvrd.kafka import clients
from uvrd.kafka.commit_mode import OutRecord

log = structlog.get_logger("uvrd.bulletin")

MAX_BLOCK_MS = 1000
CLOSE_TIMEOUT_S = 1.0


class Bulletin:
    def __init__(self, kafka_config: KafkaConfig) -> None:
        self.kafka_config = kafka_config
        self._producer: KafkaProducer | None = None
        self._complained = False

    def send(self, record: OutRecord) -> None:
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

    def _complain(self, e: Exception) -> None:
        if not self._complained:  # once per outage, not once per report
            log.warning("could not publish a report", error=str(e) or type(e).__name__)
            self._complained = True
