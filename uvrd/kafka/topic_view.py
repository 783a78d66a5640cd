"""A whole topic, read from its start by a background thread without a consumer group: every
reader sees every partition.  For the topics every api or processor keeps a view of (status,
cancellations, workers, dead letters); *fold* is called with each record, in order.

A view trails the topic.  Where that would mislead (an api worker asked about a task another
worker accepted a moment ago, a processor about to start a task whose cancellation was just
recorded), :meth:`TopicView.read_through_end` is the barrier: whatever the broker had
acknowledged before it was called has been folded in when it returns True."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Self

import structlog
from kafka import TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from uvrd.config import KafkaConfig
from uvrd.kafka import clients
from uvrd.kafka.end_offsets import EndOffsets
from uvrd.runtime.deadline import Deadline

log = structlog.get_logger("uvrd.topic_view")

# How often a reader of a topic that does not exist yet looks again.
MISSING_TOPIC_RECHECK_S = 1.0


class TopicView:
    def __init__(self, kafka_config: KafkaConfig, topic: str, fold: Callable[[ConsumerRecord], None],
                 missing_is_empty: bool = False) -> None:
        """*missing_is_empty*: a topic that does not exist counts as caught up with nothing in it
        (and is looked for again until it appears), rather than as still loading."""
        self.kafka_config = kafka_config
        self.topic = topic
        self._fold = fold
        self._missing_is_empty = missing_is_empty
        self._stop = threading.Event()
        self._caught_up = threading.Event()
        # Each partition's offset up to which the reader has folded records in, and a condition
        # that the reader notifies as it moves on (the barrier waits on it).
        self._applied: dict[int, int] = {}
        self._moved = threading.Condition()
        self._ends = EndOffsets(kafka_config, topic)
        self._thread = threading.Thread(target=self._run, name=f"view-{topic}", daemon=True)

    def start(self) -> TopicView:
        if not self._thread.is_alive() and not self._stop.is_set():
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop reading; wait up to *timeout* for the reader (a daemon thread: the process need not)."""
        self._stop.set()
        with self._moved:
            self._moved.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._ends.close()

    @property
    def caught_up(self) -> bool:
        """Everything the topic held when the reader started has been folded in."""
        return self._caught_up.is_set()

    def wait_caught_up(self, timeout: float) -> bool:
        return self._caught_up.wait(timeout)

    # -- the read-your-writes barrier ---------------------------------------------------------
    def end_now(self, deadline: Deadline) -> dict[int, int] | None:
        """Where the topic ends now (partition: offset), or None if the broker did not say before
        *deadline*: the target of :meth:`reached`."""
        return self._ends.now(deadline)

    def reached(self, end: dict[int, int]) -> bool:
        """Every record before *end* (from :meth:`end_now`) has been folded in."""
        with self._moved:
            return self._reached_locked(end)

    def read_through_end(self, deadline: Deadline) -> bool:
        """Take the topic's end now and wait until the reader has folded in every record before it:
        whether it did before *deadline*."""
        end = self.end_now(deadline)
        if end is None:
            return False
        with self._moved:
            timeout = None if deadline.at == math.inf else deadline.remaining()  # a lock takes no infinite timeout
            return self._moved.wait_for(lambda: self._stop.is_set() or self._reached_locked(end),
                                        timeout) and not self._stop.is_set()

    def _reached_locked(self, end: dict[int, int]) -> bool:
        return all(self._applied.get(p, 0) >= offset for p, offset in end.items())

    def _applied_through(self, positions: dict[int, int]) -> None:
        with self._moved:
            self._applied.update(positions)
            self._moved.notify_all()

    def wait_reached(self, offsets: dict[int, int], timeout: float) -> bool:
        """Whether, within *timeout*, every record before *offsets* (partition -> offset) is folded in."""
        def reached() -> bool:
            return all(self._applied.get(p, 0) >= o for p, o in offsets.items() if o > 0)
        with self._moved:
            return self._moved.wait_for(reached, timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._read()
            except Exception as e:  # the reader must outlive a broker outage
                log.warning("topic reader failed, restarting it", topic=self.topic, error=str(e) or type(e).__name__)
                self._stop.wait(2)

    def _read(self) -> None:
        consumer = clients.consumer(self.kafka_config, group_id=None, max_poll_records=500)
        try:
            partitions = None
            warned = False
            while not partitions and not self._stop.is_set():
                # kafka-python answers an empty set for a topic that does not exist.
                partitions = consumer.partitions_for_topic(self.topic) or None
                if partitions is None:
                    if self._missing_is_empty and not warned:
                        log.warning("topic does not exist; reading it as empty until it does", topic=self.topic)
                        warned = True
                        self._caught_up.set()
                    self._stop.wait(MISSING_TOPIC_RECHECK_S)
            tps = [TopicPartition(self.topic, p) for p in sorted(partitions or ())]
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            end = consumer.end_offsets(tps)
            while not self._stop.is_set():
                for batch in consumer.poll(timeout_ms=500).values():
                    for rec in batch:
                        self._fold(rec)
                # After the fold: a barrier that sees a position sees the records before it.
                positions = {tp.partition: consumer.position(tp) for tp in tps}
                self._applied_through(positions)
                if not self._caught_up.is_set() and all(positions[tp.partition] >= end[tp] for tp in tps):
                    self._caught_up.set()
        finally:
            consumer.close(autocommit=False)


class TopicBoard:
    """What a daemon keeps in memory of one topic, kept current by a TopicView: a subclass says how
    each record folds in (``fold``), under ``self._lock``."""

    missing_is_empty = True  # a topic a deployment may not have created yet holds nothing
    stop_timeout = 1.0

    def __init__(self, kafka_config: KafkaConfig, topic: str) -> None:
        self.topic = topic
        self._lock = threading.Lock()
        self._view = TopicView(kafka_config, topic, self.fold, missing_is_empty=self.missing_is_empty)

    def start(self) -> Self:
        self._view.start()
        return self

    def stop(self) -> None:
        self._view.stop(timeout=self.stop_timeout)

    @property
    def caught_up(self) -> bool:
        return self._view.caught_up

    def wait_caught_up(self, timeout: float) -> bool:
        return self._view.wait_caught_up(timeout)

    def read_through_end(self, deadline: Deadline) -> bool:
        """The view's barrier (TopicView.read_through_end)."""
        return self._view.read_through_end(deadline)

    def end_now(self, deadline: Deadline) -> dict[int, int] | None:
        return self._view.end_now(deadline)

    def reached(self, end: dict[int, int]) -> bool:
        return self._view.reached(end)

    def wait_reached(self, offsets: dict[int, int], timeout: float) -> bool:
        return self._view.wait_reached(offsets, timeout)

    def fold(self, rec: ConsumerRecord) -> None:
        raise NotImplementedError
