"""How a result and its task's offset are committed together (the Kafka side; "delivery" is the webhook).

exactly-once: result, dead-letter copy and offset in one Kafka transaction
    (``send_offsets_to_transaction`` with the consumer's group metadata, so a
    worker that lost its partition in a rebalance is fenced by the broker).
    Readers use ``read_committed``.
at-least-once: produce, flush, then commit the offset.  A crash between the
    two re-runs the task: consumers deduplicate by task_uuid.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import kafka.errors as Errors
import structlog
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata

log = structlog.get_logger("uvrd.commit")

FLUSH_TIMEOUT_S = 30.0
# The group moved on without us: another member owns the partition now.
_LOST_PARTITION = (Errors.CommitFailedError, Errors.IllegalGenerationError, Errors.UnknownMemberIdError,
                   Errors.RebalanceInProgressError, Errors.FencedInstanceIdError)


@dataclass(frozen=True)
class OutRecord:
    topic: str
    key: bytes | None
    value: bytes | None  # None: a tombstone, for a compacted topic
    headers: tuple[tuple[str, bytes], ...] = field(default_factory=tuple)


class CommitLost(Exception):
    """The partition is no longer ours: nothing was committed and another worker redoes the task."""


class Fenced(Exception):
    """Another producer took over our transactional.id: this worker must exit."""


def dead_letter(topic: str, record, error: str, stage: str) -> OutRecord:
    """A verbatim copy of *record* for the dead-letter topic; why and whence ride in headers."""
    return OutRecord(topic, record.key, record.value or b"", (
        ("uvrd-error", error.encode()),
        ("uvrd-source", f"{record.topic}/{record.partition}/{record.offset}".encode()),
        ("uvrd-stage", stage.encode()),
    ))


def next_offset(record) -> dict[TopicPartition, OffsetAndMetadata]:
    return {TopicPartition(record.topic, record.partition): OffsetAndMetadata(record.offset + 1, "", -1)}


class CommitMode:
    mode = ""

    def __init__(self, make_producer: Callable[[], KafkaProducer], consumer: KafkaConsumer):
        self._make_producer = make_producer
        self._consumer = consumer
        self.producer: KafkaProducer | None = None

    def open(self) -> None:
        self.producer = self._make_producer()

    def close(self, timeout: float) -> None:
        if self.producer is not None:
            self.producer.close(timeout=timeout)
            self.producer = None

    def _commit_offsets(self, offsets) -> None:
        """The group's own offset commit: atomic, and fenced by the group generation."""
        try:
            self._consumer.commit(offsets)
        except _LOST_PARTITION as e:
            raise CommitLost(str(e)) from e


class ExactlyOnce(CommitMode):
    mode = "exactly-once"

    def open(self) -> None:
        super().open()
        try:
            self.producer.init_transactions()
        except Errors.ProducerFencedError as e:
            raise Fenced(str(e)) from e

    def commit(self, records: list[OutRecord], offsets) -> None:
        if not records:
            # Offsets alone (a result with nothing to deliver, a task's second result) need no transaction:
            # the group's commit is atomic and fenced on its own.  And Tansu drops the offsets of a
            # transaction that carries nothing else, after the first such one (kafka-python sends
            # AddOffsetsToTxn, TxnOffsetCommit and EndTxn, each answered without error).
            self._commit_offsets(offsets)
            return
        p = self.producer
        try:
            p.begin_transaction()
            for r in records:
                p.send(r.topic, key=r.key, value=r.value, headers=list(r.headers))
            if offsets:
                p.send_offsets_to_transaction(offsets, self._consumer.group_metadata())
            p.commit_transaction()
        except (Errors.ProducerFencedError, Errors.InvalidProducerEpochError) as e:
            raise Fenced(str(e)) from e
        except _LOST_PARTITION as e:
            self._abort()
            raise CommitLost(str(e)) from e
        except Errors.KafkaError:
            self._abort()
            raise

    def _abort(self) -> None:
        try:
            self.producer.abort_transaction()
        except Exception as e:
            # A producer in a fatal state cannot abort: start a fresh one,
            # whose init_transactions aborts whatever the old one left open.
            log.warning("abort failed, recreating the transactional producer", error=str(e))
            self.close(timeout=0)
            self.open()


class AtLeastOnce(CommitMode):
    mode = "at-least-once"

    def commit(self, records: list[OutRecord], offsets) -> None:
        futures = [self.producer.send(r.topic, key=r.key, value=r.value, headers=list(r.headers)) for r in records]
        self.producer.flush(timeout=FLUSH_TIMEOUT_S)
        for f in futures:
            f.get(timeout=0)  # raises the send's error, if any
        if offsets:
            self._commit_offsets(offsets)
