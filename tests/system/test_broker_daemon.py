"""``uvrd broker``: the single-host broker as systemd runs it, and what the other daemons rely on it
to keep: records, transactions, fencing and committed offsets, through a SIGKILL of the daemon and its
children.  Everything is read from outside: notify messages, exit codes, /proc, and Kafka clients."""

from __future__ import annotations

import os
import signal
import uuid

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from support import Daemon, NotifySocket, process_gone, wait_until
from uvrd.broker.local import answers_kafka
from uvrd.broker.loopback import free_port
from uvrd.config import TopicsConfig

TOPICS = TopicsConfig(tasks="t.tasks", results="t.results", dead_letter="t.dlq", status="t.status")


class BrokerUnit:
    """`uvrd broker` on one data directory, started again as systemd would after a failure."""

    def __init__(self, root, port: int):
        self.root = root
        self.port = port
        self.bootstrap = f"127.0.0.1:{port}"
        self.config = root / "broker.toml"
        self.config.write_text(f"""[topics]
tasks = "{TOPICS.tasks}"
results = "{TOPICS.results}"
dead_letter = "{TOPICS.dead_letter}"
status = "{TOPICS.status}"
[broker]
listen = "{self.bootstrap}"
data_dir = "{root / 'data'}"
task_partitions = 3
""")
        self.daemons: list[Daemon] = []

    def start(self, watchdog_usec: int | None = None) -> Daemon:
        name = f"broker{len(self.daemons)}"
        (self.root / name).mkdir()
        daemon = Daemon("broker", self.config, self.root / f"{name}.log", NotifySocket(self.root / name),
                        watchdog_usec=watchdog_usec)
        self.daemons.append(daemon)
        return daemon

    def close(self) -> None:
        for d in self.daemons:
            d.stop()
            d.notify.close()


@pytest.fixture
def unit(tmp_path):
    u = BrokerUnit(tmp_path, free_port())
    yield u
    u.close()


def test_ready_once_it_answers_then_sigterm_stops_both_children(unit):
    daemon = unit.start(watchdog_usec=2_000_000)
    daemon.wait_ready(120)
    assert answers_kafka("127.0.0.1", unit.port), "READY=1 means the broker answers"
    assert f"STATUS=serving Kafka on {unit.bootstrap}" in daemon.notify.lines()
    daemon.notify.wait_for(lambda line: line == "WATCHDOG=1", 10, "a watchdog ping while both children run")
    consumer = KafkaConsumer(bootstrap_servers=unit.bootstrap)
    try:
        described = {t: len(consumer.partitions_for_topic(t) or ()) for t in consumer.topics()}
    finally:
        consumer.close()
    assert described[TOPICS.tasks] == 3 and described[TOPICS.task_topic(1)] == 3 and described[TOPICS.results] == 1

    children = daemon.children()
    assert len(children) == 2, "the object store and the broker"
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit(30) == 0
    assert "STOPPING=1" in daemon.notify.lines()
    assert all(process_gone(pid) for pid in children)
    assert not answers_kafka("127.0.0.1", unit.port, 1.0)


def test_a_child_that_dies_takes_the_daemon_down_for_systemd_to_restart(unit):
    daemon = unit.start()
    daemon.wait_ready(120)
    store = next(pid for pid in daemon.children() if b"weed" in open(f"/proc/{pid}/cmdline", "rb").read())
    broker = next(pid for pid in daemon.children() if pid != store)
    os.kill(store, signal.SIGKILL)
    assert daemon.wait_exit(30) == 1
    [event] = daemon.events("a child of the broker exited: stopping, for systemd to restart both")
    assert event["child"].startswith("object store")
    wait_until(lambda: process_gone(broker), 10, "the broker to go with the daemon")


def test_records_transactions_fencing_and_offsets_survive_a_sigkill_of_the_whole(unit):
    daemon = unit.start()
    daemon.wait_ready(120)
    transactional_id = f"processor-{uuid.uuid4().hex[:6]}"
    producer = KafkaProducer(bootstrap_servers=unit.bootstrap, transactional_id=transactional_id)
    producer.init_transactions()
    for i in range(5):
        producer.begin_transaction()
        producer.send(TOPICS.results, f"committed-{i}".encode(), partition=0)
        producer.commit_transaction()
    producer.begin_transaction()
    producer.send(TOPICS.results, b"aborted", partition=0)
    producer.abort_transaction()
    consumer = KafkaConsumer(bootstrap_servers=unit.bootstrap, group_id="uploader", enable_auto_commit=False,
                             isolation_level="read_committed", auto_offset_reset="earliest",
                             session_timeout_ms=6000, heartbeat_interval_ms=1000)
    consumer.assign([TopicPartition(TOPICS.results, 0)])
    got = []
    wait_until(lambda: got.extend(r.value for rs in consumer.poll(200).values() for r in rs) or len(got) >= 5, 30,
               "the committed records")
    consumer.commit({TopicPartition(TOPICS.results, 0): OffsetAndMetadata(_offset_after(3), "", -1)})
    consumer.close()

    # A second broker on the same data would overwrite it: refused.
    second = unit.start()
    assert second.wait_exit(120) == 1
    assert second.events("the data directory is in use")

    # SIGKILL of the daemon: the kernel ends its children (PR_SET_PDEATHSIG), as a crash or an OOM kill would.
    children = daemon.children()
    daemon.signal(signal.SIGKILL)
    daemon.wait_exit(10)
    wait_until(lambda: all(process_gone(p) for p in children), 10, "the children to die with the daemon")

    again = unit.start()
    again.wait_ready(120)
    consumer = KafkaConsumer(bootstrap_servers=unit.bootstrap, group_id="uploader", enable_auto_commit=False,
                             isolation_level="read_committed", auto_offset_reset="earliest",
                             consumer_timeout_ms=3000)
    partition = TopicPartition(TOPICS.results, 0)
    assert consumer.committed(partition) == _offset_after(3), "the group's committed offset"
    consumer.assign([partition])
    consumer.seek_to_beginning(partition)
    assert [r.value for r in consumer] == [f"committed-{i}".encode() for i in range(5)], \
        "every committed record, and not the aborted one"
    consumer.close()

    # The restarted processor's producer fences the one from before the crash: a zombie cannot commit.
    successor = KafkaProducer(bootstrap_servers=unit.bootstrap, transactional_id=transactional_id)
    successor.init_transactions()
    with pytest.raises(KafkaError):
        producer.begin_transaction()
        producer.send(TOPICS.results, b"zombie", partition=0)
        producer.commit_transaction()
    producer.close(timeout=5)
    successor.close()


def _offset_after(index: int) -> int:
    """Each committed transaction here is a record and its marker: two offsets."""
    return 2 * (index + 1)
