"""A member busy between polls keeps the join that finished meanwhile (uvrd/kafka/group_join.py)."""

from __future__ import annotations

import logging
import threading
import time
import uuid

from kafka import ConsumerRebalanceListener
from kafka.admin import KafkaAdminClient, NewTopic

from support import FAST_GROUP, wait_until
from uvrd.config import KafkaConfig
from uvrd.kafka import clients

# A processor in a job: a short poll for its membership, then a wait on the separation.
BUSY_POLL_MS, BUSY_WAIT_S = 10, 0.4


class Assignments(ConsumerRebalanceListener):
    def __init__(self):
        self.count = 0

    def on_partitions_revoked(self, revoked):
        pass

    def on_partitions_assigned(self, assigned):
        self.count += 1


class JoinRequests(logging.Handler):
    """kafka-python's own line for every JoinGroup one client sends (from that client's network thread)."""

    def __init__(self, client_id: str):
        super().__init__(logging.INFO)
        self.thread = f"kafka-io-{client_id}"
        self.count = 0

    def emit(self, record):
        if record.threadName == self.thread and record.getMessage().startswith("(Re-)joining group"):
            self.count += 1


def test_a_member_busy_between_polls_joins_a_rebalance_once(broker):
    topic, group = f"join-{uuid.uuid4().hex[:8]}", f"join-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    admin.create_topics([NewTopic(topic, 2, 1)])
    admin.close()
    kc = KafkaConfig(bootstrap_servers=broker.bootstrap, **FAST_GROUP)
    busy_id = f"busy-{uuid.uuid4().hex[:8]}"
    busy, busy_seen = clients.consumer(kc, group, client_id=busy_id), Assignments()
    other, other_seen = clients.consumer(kc, group), Assignments()
    joins = JoinRequests(busy_id)
    coordinator_log = logging.getLogger("kafka.coordinator")
    level = coordinator_log.level
    stop = threading.Event()

    def keep_polling():
        while not stop.is_set():
            other.poll(timeout_ms=200)

    def joined():
        busy.poll(timeout_ms=200)
        return busy_seen.count == 1

    polling = threading.Thread(target=keep_polling)
    try:
        busy.subscribe([topic], listener=busy_seen)
        wait_until(joined, 60, "the first join")
        coordinator_log.setLevel(logging.INFO)
        coordinator_log.addHandler(joins)
        other.subscribe([topic], listener=other_seen)
        polling.start()

        def rebalanced():
            busy.poll(timeout_ms=BUSY_POLL_MS)
            time.sleep(BUSY_WAIT_S)
            return busy_seen.count == 2 and other_seen.count >= 1

        wait_until(rebalanced, 60, "the rebalance")
        # kafka-python 3.0 alone drops the join that finished during the wait and sends another.
        assert joins.count == 1
        assert other_seen.count == 1 and {tp.partition for tp in busy.assignment() | other.assignment()} == {0, 1}
    finally:
        stop.set()
        if polling.is_alive():
            polling.join(5)
        coordinator_log.removeHandler(joins)
        coordinator_log.setLevel(level)
        busy.close(autocommit=False)
        other.close(autocommit=False)
