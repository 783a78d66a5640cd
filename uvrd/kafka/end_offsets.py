"""Where a topic's partitions end now, asked of the broker from any thread.

A TopicView's reader owns its consumer (kafka-python's consumers are not thread-safe), so a
request thread that needs the topic's end (the read-your-writes barrier, topic_view.py) asks
through a consumer of its own, one question at a time.

The end is the high watermark a fetch answers with (:class:`HighWatermarks`), not ListOffsets'
answer alone: Tansu, the single-host broker, answers ListOffsets for the latest offset with the first
offset of the partition's last record batch + 1, short of the end by the rest of that batch (a burst
of tasks through the api, or a transaction's records for one partition).  Apache Kafka answers both
alike.  A reader that consumes up to an end (a view's start, the key history, the api's idempotency
barrier) reads whole batches, so a short end does not mislead it; the ends a decision rests on (here,
and partition_ends.py) are taken from a fetch.
"""

from __future__ import annotations

import threading

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError, KafkaTimeoutError

from uvrd.config import KafkaConfig
from uvrd.kafka import clients
from uvrd.runtime.deadline import Deadline

# A question never waits longer than this for the broker, whatever the caller's deadline.
MAX_WAIT_MS = 5000
# For a consumer that HighWatermarks asks through: how long the broker holds a fetch that finds nothing new.
# The last question's consumer has one under way, and the next question's requests queue behind it
# on the same connection (kafka-python's default, 500 ms, before every question).
QUESTION_CONSUMER = {"fetch_max_wait_ms": 10}


class EndOffsets:
    def __init__(self, kafka_config: KafkaConfig, topic: str) -> None:
        self.kafka_config = kafka_config
        self.topic = topic
        self._lock = threading.Lock()
        self._consumer: KafkaConsumer | None = None
        self._marks: HighWatermarks | None = None
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
            wait_ms = _ms(deadline)
            if self._consumer is None:
                self._consumer = clients.consumer(
                    self.kafka_config, group_id=None, isolation_level="read_uncommitted",
                    bootstrap_timeout_ms=wait_ms, request_timeout_ms=max(wait_ms, MAX_WAIT_MS), **QUESTION_CONSUMER)
                self._marks = HighWatermarks(self._consumer)
            partitions = self._consumer.partitions_for_topic(self.topic)  # empty for a topic that does not exist
            if not partitions:
                return {}
            tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
            assert self._marks is not None
            ends = self._marks.ends(tps, Deadline.after(deadline.cap(MAX_WAIT_MS / 1000)))
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


class HighWatermarks:
    """Each partition's end: the high watermark of a fetch from the last record ListOffsets knows of
    (never past the end, on any broker), so that a broker whose ListOffsets answer falls short (the
    module's docstring) is read right.

    Its consumer (no group, made with QUESTION_CONSUMER) is used for nothing else: it stays assigned
    every partition it was asked about (a new assignment would drop the other topics' metadata, and
    kafka-python's end_offsets then fails on them).  It fetches only while it answers, each partition
    from where the last question left it: at its end, where nothing comes."""

    def __init__(self, consumer: KafkaConsumer) -> None:
        self.consumer = consumer
        self._asked: set[TopicPartition] = set()

    def ends(self, tps: list[TopicPartition], deadline: Deadline) -> dict[TopicPartition, int]:
        """Raises a KafkaError, or KafkaTimeoutError past *deadline*."""
        consumer = self.consumer
        if not set(tps) <= self._asked:
            self._asked |= set(tps)
            consumer.assign(sorted(self._asked))
        listed: dict[TopicPartition, int] = consumer.end_offsets(tps, timeout_ms=_ms(deadline))
        nonempty = [tp for tp in tps if listed[tp] > 0]
        for tp in nonempty:
            # kafka-python keeps a partition's last high watermark: forgotten, so that only a fetch
            # sent after this question answers it.
            consumer._subscription.assignment[tp].highwater = None
            consumer.seek(tp, listed[tp] - 1)
        while missing := [tp for tp in nonempty if (consumer.highwater(tp) or 0) < listed[tp]]:
            # A high watermark below ListOffsets' answer is a fetch sent before it (one under way from the
            # last question, at the same offset): forgotten again, the next fetch answers.
            for tp in missing:
                consumer._subscription.assignment[tp].highwater = None
            if deadline.expired():
                raise KafkaTimeoutError(f"no fetch answered with {len(missing)} partitions' high watermark in time")
            consumer.poll(timeout_ms=min(_ms(deadline), 200))
        return {tp: max(listed[tp], consumer.highwater(tp) or 0) if tp in nonempty else listed[tp] for tp in tps}


def _ms(deadline: Deadline) -> int:
    return max(1, int(deadline.cap(MAX_WAIT_MS / 1000) * 1000))
