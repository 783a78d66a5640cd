"""Every value one key has had on a compacted topic, read to the topic's end now.

A change fenced per key (a replay, a named API key) must decide on what the topic holds once every
earlier transaction on that key is settled, not on what a board has read so far: so it reads the
topic itself, read_committed, from the beginning to the end it has when asked.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import kafka.errors as Errors
from kafka import TopicPartition

from uvrd.config import KafkaConfig
from uvrd.kafka import clients


def values_of(kafka_config: KafkaConfig, topic: str, key: str, timeout_s: float) -> Iterator[bytes | None]:
    """*key*'s values on *topic* in the order written (None for a tombstone).  Raises a KafkaError if
    the topic does not exist, and a KafkaTimeoutError if it is not read to its end in *timeout_s*."""
    wanted = key.encode()
    consumer = clients.consumer(kafka_config, None, max_poll_records=500)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not tps:
            raise Errors.KafkaError(f"the topic {topic} does not exist")
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise Errors.KafkaTimeoutError(f"the topic {topic} was not read to its end in time")
            for records in consumer.poll(timeout_ms=500).values():
                yield from (r.value for r in records if r.key == wanted)
    finally:
        consumer.close()
