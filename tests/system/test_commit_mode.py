"""An exactly-once commit whose broker dies while the transaction ends: the commit never holds
the daemon's loop for good, and whatever the broker did with it, each record is committed
once, with its offset (uvrd/kafka/commit_mode.py).

A real durable broker (Tansu on SeaweedFS, as ``uvrd broker`` runs it) is SIGKILLed as each
commit starts and started again on its data: kafka-python 3.0.12, left to itself, can wait for
the answer to that EndTxn for good (2 runs in 3 here).
"""

from __future__ import annotations

import threading
import time

import kafka.errors as Errors
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import NewTopic
from kafka.structs import OffsetAndMetadata

from uvrd.broker.local import LocalBroker
from uvrd.broker.loopback import free_port
from uvrd.config import KafkaConfig
from uvrd.kafka import clients
from uvrd.kafka.commit_mode import PRODUCER_BOUNDS, ExactlyOnce, OutRecord, Unanswered
from uvrd.runtime.backoff import Backoff

ROUNDS = 3
SOURCE = TopicPartition("source", 0)
# A commit call that has not ended after this long waits for good (kafka-python's own wait): a bound
# that ends the test.  Each call's steps are bounded by TXN_WAIT_S (8 s) and it takes a few of them;
# the time a call takes is printed, not asserted.
CALL_ENDS_S = 180


def _call_ending(call) -> None:
    """Run *call* on a thread: what it returned or raised, once it ended; a failure if it has not
    ended after CALL_ENDS_S (the thread is left behind, as a daemon)."""
    outcome: list = []

    def run():
        try:
            call()
            outcome.append(None)
        except BaseException as e:  # handed to the test's thread
            outcome.append(e)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(CALL_ENDS_S)
    assert outcome, f"a commit call still waiting after {CALL_ENDS_S} s: it waits for good"
    if outcome[0] is not None:
        raise outcome[0]


def _kill_and_start_again(b: LocalBroker) -> None:
    # Both children die at once, as a SIGKILL of `uvrd broker` takes them (they die with their parent).
    for proc in (b.broker.proc, b.store.proc):
        proc.kill()
    for proc in (b.broker.proc, b.store.proc):
        proc.wait()
    b.stop()  # releases the data directory's lock; the children are already gone
    b.start()


def test_a_broker_killed_as_each_transaction_ends_leaves_every_record_committed_once(tmp_path):
    with LocalBroker(tmp_path / "data", port=free_port(), log_dir=tmp_path) as b:
        admin = KafkaAdminClient(bootstrap_servers=b.bootstrap)
        try:
            admin.create_topics([NewTopic("source", 1, 1), NewTopic("out", 1, 1)])
        finally:
            admin.close()
        kc = KafkaConfig(bootstrap_servers=b.bootstrap, request_timeout_ms=5000)
        consumer = clients.consumer(kc, "commit-mode-test")
        consumer.assign([SOURCE])
        mode = ExactlyOnce(lambda: clients.producer(kc, "commit-mode-test", **PRODUCER_BOUNDS), consumer)
        mode.open()
        longest_call, unanswered = 0.0, 0
        try:
            for i in range(ROUNDS):
                record = OutRecord("out", b"task", f"result {i}".encode())
                offsets = {SOURCE: OffsetAndMetadata(i + 1, "", -1)}
                killer = threading.Thread(target=_kill_and_start_again, args=(b,))
                killer.start()
                backoff = Backoff(0.5, 5.0)
                while True:
                    began = time.monotonic()
                    try:
                        _call_ending(lambda: mode.commit([record], offsets))
                        break
                    except Errors.KafkaError as e:
                        unanswered += isinstance(e, Unanswered)
                        time.sleep(backoff.next())  # the daemons' retry backoff, not a wait for a condition
                    finally:
                        longest_call = max(longest_call, time.monotonic() - began)
                killer.join()
        finally:
            mode.close(timeout=1)
            consumer.close(autocommit=False)
        print(f"\n{ROUNDS} commits through a broker SIGKILL each: {unanswered} unanswered, "
              f"longest call {longest_call:.1f} s")
        # The successor's bootstrap and init, the unsure commit's offsets, one step: each bounded by
        # TXN_WAIT_S, so every call above ended (_call_ending); how long one takes is a figure, not a test.
        reader = KafkaConsumer("out", bootstrap_servers=b.bootstrap, isolation_level="read_committed",
                               auto_offset_reset="earliest", enable_auto_commit=False, consumer_timeout_ms=5000)
        try:
            values = [m.value.decode() for m in reader]
        finally:
            reader.close()
        assert values == [f"result {i}" for i in range(ROUNDS)]
        check = clients.consumer(kc, "commit-mode-test")
        try:
            assert check.committed(SOURCE) == ROUNDS
        finally:
            check.close(autocommit=False)
