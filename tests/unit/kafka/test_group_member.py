"""A claim's states through rebalances: held, revoked while one runs, then held again or lost."""

from __future__ import annotations

from types import SimpleNamespace

import structlog
from kafka import TopicPartition

from uvrd.kafka.group_member import Claim, ClaimState, GroupMember

TP = TopicPartition("tasks", 0)
OTHER = TopicPartition("tasks", 1)


def test_given_back_in_the_next_generation_it_is_held_again():
    claim = Claim(TP, generation=4)
    claim.revoke()
    assert claim.state is ClaimState.REVOKED and not claim.held and not claim.lost
    assert claim.settle({TP, OTHER}, generation=5) is ClaimState.HELD
    assert claim.generation == 5


def test_assigned_elsewhere_it_is_lost():
    claim = Claim(TP, generation=4)
    claim.revoke()
    assert claim.settle({OTHER}, generation=5) is ClaimState.LOST and claim.lost


def test_back_after_a_generation_without_us_it_is_lost():
    """Frozen past its session: another member owned the partition for a generation (and may have
    committed the record), so having it again now does not make the work ours."""
    claim = Claim(TP, generation=4)
    claim.revoke()
    assert claim.settle({TP}, generation=6) is ClaimState.LOST
    assert claim.generation == 4, "the generation it was lost in is what the log says"


def test_lost_stays_lost():
    claim = Claim(TP, generation=4)
    claim.revoke()
    claim.settle(set(), generation=5)
    claim.revoke()
    assert claim.settle({TP}, generation=6) is ClaimState.LOST


def test_made_outside_a_generation_it_cannot_be_given_back():
    claim = Claim(TP, generation=None)
    claim.revoke()
    assert claim.settle({TP}, generation=1) is ClaimState.LOST


class Consumer:
    """What GroupMember asks of kafka-python's consumer here: its assignment and generation, the
    group's committed offsets, and where it is told to fetch from."""

    def __init__(self, committed: dict[TopicPartition, int]) -> None:
        self.generation = 1
        self.assigned: set[TopicPartition] = set()
        self.committed_offsets = committed
        self.sought: dict[TopicPartition, int] = {}
        self.fetched: dict[TopicPartition, list] = {}
        self.config = {"auto_offset_reset": "earliest", "group_id": "g", "max_poll_interval_ms": 8000,
                       "session_timeout_ms": 6000}

    def group_metadata(self):
        return SimpleNamespace(generation_id=self.generation)

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def committed(self, tp: TopicPartition, timeout_ms: int | None = None) -> int | None:
        return self.committed_offsets.get(tp)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.sought[tp] = offset

    def seek_to_beginning(self, *tps: TopicPartition) -> None:
        self.sought.update({tp: 0 for tp in tps})

    def pause(self, *tps: TopicPartition) -> None:
        pass

    def poll(self, timeout_ms: int, max_records: int | None = None) -> dict[TopicPartition, list]:
        fetched, self.fetched = self.fetched, {}
        return fetched


def rebalance(member: GroupMember, consumer: Consumer, generation: int, assigned: set[TopicPartition]) -> None:
    """What kafka-python's listener calls in a poll: revoked, then assigned in *generation*."""
    member._revoked(consumer.assigned)
    consumer.generation, consumer.assigned = generation, set(assigned)
    member._assigned(assigned)


def member_with(consumer: Consumer) -> GroupMember:
    return GroupMember(consumer, commit_mode=None, runtime=SimpleNamespace())  # type: ignore[arg-type]


def test_a_partition_kept_across_a_generation_without_us_is_fetched_again_from_the_committed_offset():
    """`make faults`: a processor's join was cut short by another member's restart, and it got its
    partitions back two generations on.  kafka-python kept their positions, past the task in the model
    (its commit then refused) and the tasks read ahead: the next commits moved the offset past them,
    and three of 500 tasks had no outcome.  The position is now the group's committed offset."""
    consumer = Consumer(committed={TP: 2, OTHER: 7})
    member = member_with(consumer)
    rebalance(member, consumer, 4, {TP, OTHER})
    claim = member.claim(TP, resume_at=5)  # offsets 2 to 4 taken, none committed
    rebalance(member, consumer, 6, {TP, OTHER})
    assert claim.lost
    consumer.fetched = {TP: ["offset 5"], OTHER: ["offset 9"]}  # from the positions kept
    assert member.poll(0, 10) == [], "nothing fetched from a position kept across the gap is taken"
    assert consumer.sought == {TP: 2, OTHER: 7}
    consumer.fetched = {TP: ["offset 2"]}
    assert member.poll(0, 10) == ["offset 2"] and consumer.sought == {TP: 2, OTHER: 7}, "sought once"


def test_a_partition_kept_into_the_next_generation_goes_on_past_the_work_in_flight():
    consumer = Consumer(committed={TP: 2})
    member = member_with(consumer)
    rebalance(member, consumer, 4, {TP})
    claim = member.claim(TP, resume_at=5)
    rebalance(member, consumer, 5, {TP})
    assert claim.held
    assert consumer.sought == {TP: 5}, "past what is taken, whose commit is still to come"
    member.poll(0, 10)
    assert consumer.sought == {TP: 5}


def test_a_partition_with_nothing_committed_starts_where_a_new_member_would():
    consumer = Consumer(committed={})
    member = member_with(consumer)
    rebalance(member, consumer, 1, {TP})
    rebalance(member, consumer, 3, {TP})
    member.poll(0, 10)
    assert consumer.sought == {TP: 0}


def test_a_rebalance_longer_than_the_broker_lets_one_last_is_told_once_and_its_end_too(monkeypatch):
    """`make faults`: the uploader's group stopped forming (a leader gone from a Tansu round) and
    the uploader waited without a word until its watchdog killed it."""
    now = [1000.0]
    monkeypatch.setattr("uvrd.kafka.group_member.time.monotonic", lambda: now[0])
    consumer = Consumer(committed={})
    member = member_with(consumer)
    with structlog.testing.capture_logs() as logs:
        member._revoked(set())  # the first join begins
        now[0] += 14.0  # max_poll_interval_ms + session_timeout_ms: as long as a rebalance may last
        member.poll(0, 10)
        assert member.rebalance_overdue() is None
        now[0] += 1.0
        member._revoked(set())  # the same rebalance, tried again: it began when it began
        for _ in range(3):
            member.poll(0, 10)
        assert member.rebalance_overdue() == 15.0
        [told] = [e for e in logs if e["event"].startswith("the consumer group has not formed")]
        assert told["log_level"] == "warning" and told["group_id"] == "g" and told["lasted_s"] == 15.0
        rebalance(member, consumer, 1, {TP})
        assert member.rebalance_overdue() is None
        assert [e["lasted_s"] for e in logs if e["event"] == "the consumer group formed again"] == [15.0]
        member._revoked({TP})  # the next rebalance is watched afresh
        now[0] += 20.0
        member.poll(0, 10)
    assert len([e for e in logs if e["event"].startswith("the consumer group has not formed")]) == 2
