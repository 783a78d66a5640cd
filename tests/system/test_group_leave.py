"""A consumer stopped leaves its group where leaving is safe, and its partitions always reach the
other members: at once after a leave, after its session otherwise, never held by a group left
without its leader (group_leave.py: Tansu 0.6.0 keeps a leader that left a forming round as the
leader of every later round).

Against the real broker, whose join rounds last 3 s: the stopped consumer is a plain
kafka-python consumer closed by group_leave (the unit), or a daemon sent SIGTERM in each phase
of its life (waiting for the broker, its first join, idle with an assignment, a rebalance).  The
group's other member is a plain consumer on a thread of the test, which records what it is
assigned and when.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import uuid

import pytest
from kafka import ConsumerRebalanceListener, KafkaConsumer
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.structs import MemberState

from support import FAST_GROUP, wait_until
from uvrd.kafka import clients, group_leave  # noqa: F401  (clients installs the group_join fix, as in the daemons)
from uvrd.runtime.deadline import Deadline

CLOSE_S = 5.0  # the daemons' close budget (consumer_daemon.CLOSE_TIMEOUT_S)
# A bound on the wait for partitions to move: it ends the test, it does not time the move (`make bench`'s
# scaling section times rebalances).  That a member left, not timed out, is kafka-python's own line.
MOVE_WAIT_S = 60
LEFT = "LeaveGroup request for group {} returned successfully"
LEAVING = "Leaving consumer group {}"
MID_ROUND, LEADER_MID_ROUND = group_leave.MID_ROUND, group_leave.LEADER_MID_ROUND


class Member(ConsumerRebalanceListener):
    """The group's other member, polled on a thread: every assignment it is given, with its time."""

    def __init__(self, bootstrap: str, group: str, topic: str, also: tuple[str, ...] = ()):
        """Counts the partitions of *topic*; subscribes to *also* as well, to share the daemon's
        subscription: a leader that lacks metadata for a topic some member subscribes to assigns
        without it, rebalances again once it has it, and kafka-python's consumer then stalled in
        that second join in about one run in ten (seen here: its thread polling, no exception)."""
        self.topic = topic
        self.assigned: list[tuple[float, frozenset[int]]] = []
        self.revoked: list[float] = []
        self.errors: list[str] = []  # what its polls raised: the thread keeps polling, the test can say why
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                                      **FAST_GROUP)
        self.consumer.subscribe([topic, *also], listener=self)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def on_partitions_revoked(self, revoked):
        if revoked:
            self.revoked.append(time.monotonic())

    def on_partitions_assigned(self, assigned):
        self.assigned.append((time.monotonic(), frozenset(tp.partition for tp in assigned if tp.topic == self.topic)))

    def _poll(self):
        while not self._stop.is_set():
            try:
                self.consumer.poll(timeout_ms=100)
            except Exception as e:  # a dead thread would look like a broker that never ends the round
                self.errors.append(f"{type(e).__name__}: {e}")

    def holds(self, partitions: set[int]) -> bool:
        return bool(self.assigned) and self.assigned[-1][1] == frozenset(partitions)

    def close(self):
        self._stop.set()
        self._thread.join(10)
        self.consumer.close(autocommit=False)


@pytest.fixture
def member_factory():
    members = []

    def make(bootstrap, group, topic, also=()) -> Member:
        members.append(Member(bootstrap, group, topic, also))
        return members[-1]
    yield make
    for m in members:
        m.close()


# -- the unit: group_leave.close on a plain consumer --------------------------------------------

@pytest.fixture
def topic(broker) -> str:
    name = f"leave-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        admin.create_topics([NewTopic(name, 2, 1)])
    finally:
        admin.close()
    return name


def joining_consumer(bootstrap: str, group: str, topic: str, **settings) -> KafkaConsumer:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                             **{**FAST_GROUP, **settings})
    consumer.subscribe([topic])
    return consumer


def test_a_consumer_closed_while_its_join_is_held_sends_no_leave_and_the_round_forms_without_it(
        broker, topic, member_factory, caplog):
    caplog.set_level(logging.INFO, logger="kafka.coordinator")
    group = f"g-{uuid.uuid4().hex[:8]}"
    member = member_factory(broker.bootstrap, group, topic)
    wait_until(lambda: member.holds({0, 1}), 30, "the member's assignment")
    joining = joining_consumer(broker.bootstrap, group, topic)
    wait_until(lambda: joining.poll(timeout_ms=100) == {} and member.revoked, 30, "the round the join started")
    assert joining._coordinator.state is MemberState.REBALANCING
    rounds = len(member.assigned)

    group_leave.close(joining, Deadline.after(CLOSE_S))
    # Its JoinGroup's answer could have made it the round's leader: it sent no LeaveGroup.
    assert LEAVING.format(group) not in caplog.text
    wait_until(lambda: len(member.assigned) > rounds and member.holds({0, 1}), MOVE_WAIT_S,
               "the member to hold both partitions again")


@pytest.mark.parametrize("aware", [True, False], ids=["leader rejoining", "leader not yet told"])
def test_the_leader_stopped_while_a_newcomer_joins_leaves_a_group_that_forms_again(broker, topic, member_factory,
                                                                                   caplog, aware):
    """Closed with kafka-python's own leave, the newcomer here was never assigned anything (40 s
    and more, the session at 6 s): the round kept the departed leader as its leader."""
    caplog.set_level(logging.INFO, logger="kafka.coordinator")
    group = f"g-{uuid.uuid4().hex[:8]}"
    leader = joining_consumer(broker.bootstrap, group, topic)
    wait_until(lambda: leader.poll(timeout_ms=100) == {} and len(leader.assignment()) == 2, 30,
               "the leader's assignment")
    assert leader._coordinator._is_leader
    newcomer = member_factory(broker.bootstrap, group, topic)
    if aware:  # its poll hears of the round and rejoins
        wait_until(lambda: leader.poll(timeout_ms=100) == {} and leader._coordinator.state is MemberState.REBALANCING,
                   30, "the leader's rejoin")
    else:  # it does not poll: the broker has begun the round, the leader has not heard of it
        wait_until(lambda: group_leave.group_state(leader._coordinator, Deadline.after(5)) not in (None, "Stable"), 30,
                   "the round the newcomer began")
        assert leader._coordinator.state is MemberState.STABLE

    group_leave.close(leader, Deadline.after(CLOSE_S))
    assert LEAVING.format(group) not in caplog.text
    wait_until(lambda: newcomer.holds({0, 1}), MOVE_WAIT_S, "the newcomer to hold both partitions")


def test_a_consumer_closed_with_its_assignment_leaves_and_its_partitions_move_at_once(broker, topic,
                                                                                       member_factory, caplog):
    caplog.set_level(logging.INFO, logger="kafka.coordinator")
    group = f"g-{uuid.uuid4().hex[:8]}"
    stable = joining_consumer(broker.bootstrap, group, topic)
    member = member_factory(broker.bootstrap, group, topic)
    wait_until(lambda: stable.poll(timeout_ms=100) == {} and len(stable.assignment()) == 1
               and member.holds({0, 1} - {tp.partition for tp in stable.assignment()})
               and stable._coordinator.state is MemberState.STABLE, 30, "one partition each")
    group_leave.close(stable, Deadline.after(CLOSE_S))
    # It left (the broker answered its LeaveGroup): its partitions need not wait for its session to expire.
    assert LEFT.format(group) in caplog.text
    wait_until(lambda: member.holds({0, 1}), MOVE_WAIT_S, "the member to take both partitions")


# -- the daemons, in each phase of their life ----------------------------------------------------

def subscription(stack, command: str) -> tuple[str, str, tuple[str, ...], set[int]]:
    """The daemon's group, a topic a member can share with it, the daemon's other topics (the member
    subscribes to them too), and the shared topic's partitions."""
    if command == "processor":
        return stack.group, stack.tasks, tuple(t for t in stack.topics.task_topics() if t != stack.tasks), {0, 1}
    return f"{stack.group}-uploader", stack.results, (), {0}


def stop(daemon) -> tuple[float, float]:
    """SIGTERM *daemon*; when it was sent and when the exit was seen (status 0)."""
    sent = daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit(30) == 0
    return sent, time.monotonic()


def assigned(daemon) -> list[dict]:
    return daemon.events("partitions assigned")


def revoked(daemon) -> list[dict]:
    return [e for e in daemon.events("partitions revoked") if e["partitions"]]


@pytest.mark.parametrize("stack", [2], indirect=True)
@pytest.mark.parametrize("command", ["processor", "uploader"])
def test_a_daemon_stopped_during_its_first_join_exits_and_the_round_forms_without_it(stack, member_factory,
                                                                                     record_property, command):
    group, topic, also, partitions = subscription(stack, command)
    member = member_factory(stack.bootstrap, group, topic, also)
    wait_until(lambda: member.holds(partitions), 30, "the member's assignment")
    daemon = stack.start(command)
    daemon.wait_ready()
    # The daemon's JoinGroup starts a round, which the broker holds: the member is told to rejoin.
    wait_until(lambda: member.revoked, 30, "the round the daemon's first join started")
    rounds = len(member.assigned)
    sent, exited = stop(daemon)

    assert daemon.events(MID_ROUND) and assigned(daemon) == []
    wait_until(lambda: len(member.assigned) > rounds and member.holds(partitions), MOVE_WAIT_S,
               "the member to hold every partition again")
    record_property("summary", f"{command} stopped during its first join: SIGTERM to exit {exited - sent:.3f} s, "
                               f"its partitions back with the member {member.assigned[-1][0] - exited:.1f} s after")


@pytest.mark.parametrize("stack", [2], indirect=True)
@pytest.mark.parametrize("command", ["processor", "uploader"])
def test_a_daemon_stopped_during_a_rebalance_exits_and_the_round_forms_without_it(stack, member_factory,
                                                                                  record_property, command):
    group, topic, also, partitions = subscription(stack, command)
    leader = member_factory(stack.bootstrap, group, topic, also)
    wait_until(lambda: leader.holds(partitions), 30, "the leader's assignment")
    daemon = stack.start(command)
    daemon.wait_ready()
    wait_until(lambda: assigned(daemon), 30, "the daemon's assignment")
    rejoins = len(daemon.events("partitions revoked"))
    other = member_factory(stack.bootstrap, group, topic, also)
    # The newcomer's join starts a round: the daemon gives up its partitions and rejoins, held by the broker.
    wait_until(lambda: len(daemon.events("partitions revoked")) > rejoins, 30, "the daemon's rejoin")
    sent, exited = stop(daemon)

    assert daemon.events(MID_ROUND) and len(assigned(daemon)) == 1

    def shared() -> bool:
        mine, theirs = (m.assigned[-1][1] if m.assigned else frozenset() for m in (leader, other))
        return mine | theirs == partitions and not mine & theirs and len(other.assigned) > 0
    try:
        wait_until(shared, MOVE_WAIT_S, "the two members to share every partition")
    except AssertionError as e:
        raise AssertionError(f"{e}; the leader's polls raised {leader.errors}, the newcomer's {other.errors}; "
                             f"the leader's {leader.assigned}, revoked {leader.revoked}, "
                             f"the newcomer's {other.assigned}, revoked {other.revoked}, sent {sent}") from None
    record_property("summary", f"{command} stopped during a rebalance: SIGTERM to exit {exited - sent:.3f} s")


@pytest.mark.parametrize("stack", [2], indirect=True)
def test_an_idle_daemon_stopped_leaves_and_its_partitions_move_at_once(stack, member_factory, record_property):
    # At DEBUG, kafka-python's own lines are in the daemon's log: its LeaveGroup's answer among them.
    daemon = stack.start(env={"UVRD_LOG_LEVEL": "DEBUG"})
    daemon.wait_ready()
    wait_until(lambda: assigned(daemon), 30, "the daemon's assignment")
    _, _, also, _ = subscription(stack, "processor")
    member = member_factory(stack.bootstrap, stack.group, stack.tasks, also)
    wait_until(lambda: len(assigned(daemon)) == 2 and member.assigned and len(member.assigned[-1][1]) == 1, 60,
               "one task partition each")
    sent, exited = stop(daemon)
    # It left (the broker answered its LeaveGroup): its partitions need not wait for its session to expire.
    assert LEFT.format(stack.group) in daemon.log_text()
    wait_until(lambda: member.holds({0, 1}), MOVE_WAIT_S, "the member to take both partitions")
    moved = member.assigned[-1][0] - exited
    assert not daemon.events(MID_ROUND) and not daemon.events(LEADER_MID_ROUND)
    record_property("summary", f"processor stopped idle with an assignment: SIGTERM to exit {exited - sent:.3f} s, "
                               f"its partition moved {moved:.1f} s after")


@pytest.mark.parametrize("command", ["processor", "uploader"])
def test_a_daemon_stopped_while_waiting_for_the_broker_exits(stack, record_property, command):
    """Stopped during a try at the broker, which kafka-python gives 30 s (bootstrap_timeout_ms)."""
    from uvrd.broker.loopback import free_port

    config = stack.write_config("nobroker.toml")
    config.write_text(config.read_text().replace(stack.bootstrap, f"127.0.0.1:{free_port()}"))
    daemon = stack.start(command, config=config)
    wait_until(lambda: daemon.events("connecting to the broker"), 120, "the try at the broker")
    sent, exited = stop(daemon)
    # Stopped during its first try, not after it: no try ended in an error, none was retried.
    assert len(daemon.events("connecting to the broker")) == 1
    assert not daemon.events("broker not reachable, retrying"), "the stop waited for the try at the broker to fail"
    assert "READY=1" not in daemon.notify.lines()
    record_property("summary", f"{command} stopped while waiting for the broker: SIGTERM to exit {exited - sent:.3f} s")
