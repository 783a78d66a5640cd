"""Where a partition ends, as uvrd asks it: past every record, also where the last record batch
holds several (a burst of tasks through the api, a transaction's records for one partition).

Tansu answers ListOffsets for the latest offset with the last batch's first offset + 1; these are
what the fair-share processor tells a redelivered task from a new one by (processor/read_ahead.py),
and what the read-your-writes barrier waits for (kafka/topic_view.py)."""

from __future__ import annotations

import uuid

from kafka import KafkaAdminClient, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

from uvrd.config import KafkaConfig
from uvrd.kafka.end_offsets import EndOffsets
from uvrd.kafka.partition_ends import PartitionEnds
from uvrd.runtime.deadline import Deadline


def _topic(broker, partitions: int) -> str:
    name = f"ends-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        admin.close()
    return name


def test_a_partition_ends_past_every_record_of_its_last_batch(broker, kafka):
    topic = _topic(broker, 3)
    kafka.send_together(topic, [{"n": i} for i in range(5)], partition=0)
    kafka.send_together(topic, [{"n": i} for i in range(2)], partition=1)
    ends = EndOffsets(KafkaConfig(bootstrap_servers=broker.bootstrap), topic)
    partitions = PartitionEnds(KafkaConfig(bootstrap_servers=broker.bootstrap))
    tps = [TopicPartition(topic, p) for p in range(3)]
    try:
        assert ends.now(Deadline.after(30)) == {0: 5, 1: 2, 2: 0}
        assert partitions.now(tps) == dict(zip(tps, [5, 2, 0]))
        # Asked again after more came, one record at a time and in one batch: each answer is new.
        kafka.send(topic, {"n": 5}, partition=0)
        kafka.send_together(topic, [{"n": i} for i in range(3)], partition=2)
        assert ends.now(Deadline.after(30)) == {0: 6, 1: 2, 2: 3}
        assert partitions.now(tps[2:]) == {tps[2]: 3}
        assert partitions.now(tps) == dict(zip(tps, [6, 2, 3]))
    finally:
        ends.close()
        partitions.close()


def test_a_transactions_records_and_its_marker_are_all_below_the_end(broker):
    topic = _topic(broker, 1)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, transactional_id=f"ends-{uuid.uuid4().hex[:8]}",
                             linger_ms=60_000)
    try:
        producer.init_transactions()
        producer.begin_transaction()
        for i in range(3):
            producer.send(topic, f"r{i}".encode(), partition=0)
        producer.commit_transaction()
    finally:
        producer.close()
    ends = EndOffsets(KafkaConfig(bootstrap_servers=broker.bootstrap), topic)
    try:
        assert ends.now(Deadline.after(30)) == {0: 4}, "three records and the commit marker"
    finally:
        ends.close()
