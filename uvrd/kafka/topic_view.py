"""A whole topic, read from its start by a background thread without a consumer group: every
reader sees every partition.  For the topics every api or processor keeps a view of (status,
cancellations, workers, dead letters); *fold* is called with each record, in order."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Self

import structlog
from kafka import TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from uvrd.config import KafkaConfig
from uvrd.kafka import clients

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
        # Each partition's next offset to read, once what is before it is folded in.
        self._positions: dict[int, int] = {}
        self._moved = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=f"view-{topic}", daemon=True)

    def start(self) -> TopicView:
        if not self._thread.is_alive() and not self._stop.is_set():
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop reading; wait up to *timeout* for the reader (a daemon thread: the process need not)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def caught_up(self) -> bool:
        """Everything the topic held when the reader started has been folded in."""
        return self._caught_up.is_set()

    def wait_caught_up(self, timeout: float) -> bool:
        return self._caught_up.wait(timeout)

    def wait_reached(self, offsets: dict[int, int], timeout: float) -> bool:
        """Whether, within *timeout*, every record before *offsets* (partition -> offset) is folded in."""
        def reached() -> bool:
            return all(self._positions.get(p, 0) >= o for p, o in offsets.items() if o > 0)
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
            while partitions is None and not self._stop.is_set():
                partitions = consumer.partitions_for_topic(self.topic)
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
                with self._moved:
                    self._positions = {tp.partition: consumer.position(tp) for tp in tps}
                    self._moved.notify_all()
                if not self._caught_up.is_set() and all(consumer.position(tp) >= end[tp] for tp in tps):
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

    def wait_reached(self, offsets: dict[int, int], timeout: float) -> bool:
        return self._view.wait_reached(offsets, timeout)

    def fold(self, rec: ConsumerRecord) -> None:
        raise NotImplementedError
