"""How a result and its task's offset are committed together (the Kafka side; "delivery" is the webhook).

exactly-once: result, dead-letter copy and offset in one Kafka transaction
    (``send_offsets_to_transaction`` with the consumer's group metadata, so a
    worker that lost its partition in a rebalance is fenced by the broker).
    Readers use ``read_committed``.
at-least-once: produce, flush, then commit the offset.  A crash between the
    two re-runs the task: consumers deduplicate by task_uuid.

Every wait on the broker is bounded.  kafka-python's ``commit_transaction`` and
``send_offsets_to_transaction`` wait without a bound, and a broker that dies while the EndTxn
request is on its way can leave that wait unanswered for good, even once the broker is back
(kafka-python 3.0.12 finds the coordinator again but never resends the request): the daemon's
loop would stop, its watchdog kill it, and its successor redo (re-post) what was done.  So each
step here waits at most ``TXN_WAIT_S``; a transaction whose end went unanswered is *unsure*: a
new producer with the same transactional.id fences the old one and, in ``init_transactions``,
finishes or aborts what it began, and then the group's committed offsets say which.  Until
that is known, the caller retries the same records and offsets (and learns it landed), never
redoes the work.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Callable
from typing import TypeAlias

import kafka.errors as Errors
import structlog
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.producer.transaction_manager import TransactionalRequestResult
from kafka.structs import OffsetAndMetadata

log = structlog.get_logger("uvrd.commit")

FLUSH_TIMEOUT_S = 30.0
# The longest one transactional step (the offsets, the end, an abort, init_transactions) holds
# the daemon's loop.  A failed try waits for one step; the retry for at most four (the successor's
# bootstrap and init, the unsure commit's offsets, one step): inside the uploader's WatchdogSec (60 s).
TXN_WAIT_S = 8.0
CLOSE_JOIN_S = 1.0
PRODUCER_BOUNDS = {"max_block_ms": int(TXN_WAIT_S * 1000), "bootstrap_timeout_ms": int(TXN_WAIT_S * 1000)}
# The group moved on without us: another member owns the partition now.
_LOST_PARTITION = (Errors.CommitFailedError, Errors.IllegalGenerationError, Errors.UnknownMemberIdError,
                   Errors.RebalanceInProgressError, Errors.FencedInstanceIdError)
# What a commit moves each partition's committed offset to (one past its last record done).
Offsets: TypeAlias = dict[TopicPartition, OffsetAndMetadata]
# Whether a commit whose end went unanswered landed after all, where its offsets cannot say.
Landed: TypeAlias = Callable[[], bool]


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


# kafka-python ships no stubs, so its KafkaError is Any to mypy; it must be the base all the same:
# callers retry a KafkaError.
class Unanswered(Errors.KafkaError):  # type: ignore[misc]
    """The broker did not answer a transactional step in time; retriable (a KafkaError), and the
    commit it belonged to stays unsure until the next try finds out whether it landed."""
    retriable = True


def dead_letter(topic: str, record: ConsumerRecord, error: str, stage: str) -> OutRecord:
    """A verbatim copy of *record* for the dead-letter topic; why and whence ride in headers."""
    return OutRecord(topic, record.key, record.value or b"", (
        ("uvrd-error", error.encode()),
        ("uvrd-source", f"{record.topic}/{record.partition}/{record.offset}".encode()),
        ("uvrd-stage", stage.encode()),
    ))


def next_offset(record: ConsumerRecord) -> Offsets:
    return {TopicPartition(record.topic, record.partition): OffsetAndMetadata(record.offset + 1, "", -1)}


class CommitMode:
    mode = ""

    def __init__(self, make_producer: Callable[[], KafkaProducer], consumer: KafkaConsumer) -> None:
        self._make_producer = make_producer
        self._consumer = consumer
        self.producer: KafkaProducer | None = None

    def open(self) -> None:
        self.producer = self._make_producer()

    def commit(self, records: list[OutRecord], offsets: Offsets, landed: Landed | None = None) -> None:
        """Commit *records* with *offsets* (each mode below), or raise CommitLost or a KafkaError.
        *landed*: how a retry tells that an unsure try landed, where its offsets cannot tell."""
        raise NotImplementedError

    def close(self, timeout: float) -> None:
        producer, self.producer = self.producer, None
        if producer is None:
            return
        try:
            producer.close(timeout=timeout)
        except Errors.KafkaTimeoutError:
            # close() flushes first, and a flush that runs out of time raises before the sender is
            # stopped.  What it held belongs to a transaction the successor finishes or aborts.
            producer._sender.force_close()
            producer._sender.join(CLOSE_JOIN_S)

    def _opened(self) -> KafkaProducer:
        """The producer open() made: a commit before open(), or after close(), is the caller's bug."""
        if self.producer is None:
            raise RuntimeError(f"the {self.mode} commit mode is not open")
        return self.producer

    def _commit_offsets(self, offsets: Offsets) -> None:
        """The group's own offset commit: atomic, and fenced by the group generation."""
        try:
            self._consumer.commit(offsets)
        except _LOST_PARTITION as e:
            raise CommitLost(str(e)) from e


class ExactlyOnce(CommitMode):
    mode = "exactly-once"

    def __init__(self, make_producer: Callable[[], KafkaProducer], consumer: KafkaConsumer) -> None:
        super().__init__(make_producer, consumer)
        self._ready = False  # init_transactions has answered for the current producer
        self.unsure: Offsets | None = None  # the offsets of a commit whose end went unanswered

    def open(self) -> None:
        if self.producer is None:
            super().open()
        try:
            self._opened().init_transactions()  # bounded by the producer's max_block_ms
        except Errors.ProducerFencedError as e:
            raise Fenced(str(e)) from e
        self._ready = True

    def close(self, timeout: float) -> None:
        super().close(timeout)
        self._ready = False

    def commit(self, records: list[OutRecord], offsets: Offsets, landed: Landed | None = None) -> None:
        """Commit, or raise.  After a KafkaError, call again with the same records and offsets: if
        the failed try landed after all, the retry finds that out and commits nothing twice.

        By default the group's committed offsets say whether it landed.  A commit that does not move
        its offset (fair share: a task finished above one still running, read_ahead.py) is told by
        *landed* instead, read once the successor producer has settled the unsure try."""
        if not self._ready:
            self.open()  # a successor producer: its init settles its predecessor's transaction first
        if self.unsure is not None:
            # Only a retry of the very commit can be answered by its fate; any other commit just
            # goes ahead (the successor's init has settled the unsure one either way).
            if self.unsure == offsets and (landed() if landed is not None else self._landed(offsets)):
                self.unsure = None
                log.info("the unanswered commit had landed")
                return
            self.unsure = None
        if not records:
            # Offsets alone (a result with nothing to deliver, a task's second result) need no transaction:
            # the group's commit is atomic and fenced on its own.  And Tansu drops the offsets of a
            # transaction that carries nothing else, after the first such one (kafka-python sends
            # AddOffsetsToTxn, TxnOffsetCommit and EndTxn, each answered without error).
            self._commit_offsets(offsets)
            return
        p = self._opened()
        txn = p._transaction_manager  # see the module's docstring: the public calls wait without a bound
        try:
            p.begin_transaction()
            for r in records:
                p.send(r.topic, key=r.key, value=r.value, headers=list(r.headers))
            if offsets:
                self._await(txn.send_offsets_to_transaction(offsets, self._consumer.group_metadata()), "the offsets")
            self._await(txn.begin_commit(), "the commit")
        except (Errors.ProducerFencedError, Errors.InvalidProducerEpochError) as e:
            raise Fenced(str(e)) from e
        except _LOST_PARTITION as e:
            self._end_badly(offsets, abort=True)
            raise CommitLost(str(e)) from e
        except (Unanswered, Errors.KafkaTimeoutError):
            # The broker is away: an abort would wait as long again for nothing.
            self._end_badly(offsets, abort=False)
            raise
        except Errors.KafkaError:
            self._end_badly(offsets, abort=True)
            raise

    def _await(self, result: TransactionalRequestResult, what: str) -> None:
        self._opened()._sender.wakeup()
        if not result.wait(timeout_ms=TXN_WAIT_S * 1000):  # raises the step's error, if it failed
            raise Unanswered(f"the broker did not answer {what} within {TXN_WAIT_S:.0f} s")

    def _landed(self, offsets: Offsets) -> bool:
        """Whether the group's committed offsets include *offsets*: the unsure commit's fate, read
        once the successor producer's init_transactions has finished or aborted it."""
        for tp, wanted in offsets.items():
            got = self._consumer.committed(tp, timeout_ms=int(TXN_WAIT_S * 1000))
            if got is None or got < wanted.offset:
                return False
        return True

    def _end_badly(self, offsets: Offsets, abort: bool) -> None:
        """After a failed step: an answered abort settles the transaction; anything less leaves it
        to a successor producer, and *offsets* unsure until the next commit reads their fate."""
        if abort:
            try:
                self._await(self._opened()._transaction_manager.begin_abort(), "the abort")
                return
            except Exception as e:
                # A producer in a fatal state cannot abort, and an unanswered abort is unsure.
                log.warning("abort failed, recreating the transactional producer", error=str(e) or type(e).__name__)
        # The next commit opens the successor (the caller backs off first: the broker may be away).
        self.unsure = offsets or None
        self.close(timeout=0)

class AtLeastOnce(CommitMode):
    mode = "at-least-once"

    def commit(self, records: list[OutRecord], offsets: Offsets, landed: Landed | None = None) -> None:
        producer = self._opened()
        futures = [producer.send(r.topic, key=r.key, value=r.value, headers=list(r.headers)) for r in records]
        producer.flush(timeout=FLUSH_TIMEOUT_S)
        for f in futures:
            f.get(timeout=0)  # raises the send's error, if any
        if offsets:
            self._commit_offsets(offsets)
