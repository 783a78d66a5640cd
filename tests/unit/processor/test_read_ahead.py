"""The records a fair-share processor reads ahead: the keys' tasks in turns, within a priority, and
a committed offset that never passes a task not yet ended, whatever order they end in."""

from __future__ import annotations

import json
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st
from kafka import TopicPartition

from support import fuzz_examples
from uvrd.kafka.group_member import Claim, ClaimState
from uvrd.processor.read_ahead import ReadAhead

LEVELS = {"tasks": 3, "tasks.p5": 5}


@dataclass(frozen=True)
class Record:  # the fields of kafka-python's ConsumerRecord that are read
    topic: str
    partition: int
    offset: int
    value: bytes | None


class Member:
    """The one call ReadAhead makes of a GroupMember: a claim on a partition."""

    def __init__(self) -> None:
        self.claims: list[Claim] = []

    def claim(self, tp: TopicPartition, resume_at: int | None = None) -> Claim:
        claim = Claim(tp, 1, resume_at)
        self.claims.append(claim)
        return claim


def task(offset: int, key: str | None, topic: str = "tasks", partition: int = 0, seconds: float | None = None) -> Record:
    body = {"task_uuid": f"t{offset}", "audio_path": "/x.wav", "hook_url": None, **({"key": key} if key else {}),
            **({"audio_seconds": seconds} if seconds is not None else {})}
    return Record(topic, partition, offset, json.dumps(body).encode())


def read(window: ReadAhead, member: Member, records: list[Record], ends: dict | None = None) -> None:
    for r in records:
        assert window.add(r, member, ends or {})


def committed_offset(window: ReadAhead, record: Record) -> int:
    (offset,) = window.offsets_with(record).values()
    return int(offset.offset)


def test_a_flood_of_one_key_does_not_hold_back_another_keys_tasks():
    window, member = ReadAhead(LEVELS, limit=200), Member()
    read(window, member, [task(i, "a") for i in range(100)] + [task(100 + i, "b") for i in range(5)])
    order = []
    while (r := window.pick(3)) is not None:
        order.append(r.offset)
        window.settled(r)
    assert order[:10] == [0, 100, 1, 101, 2, 102, 3, 103, 4, 104], "b's five tasks in turns with a's"
    assert order[10:] == list(range(5, 100)), "then a's in offset order"


def test_keys_take_turns_by_the_audio_seconds_their_tasks_say():
    """a's files are 5 minutes, b's 30 s: b runs ten of its tasks in the time of one of a's, and a
    task that does not say its length counts as one quantum (10 s: a third of one of b's)."""
    window, member = ReadAhead(LEVELS, limit=200), Member()
    read(window, member, [task(i, "a", seconds=300) for i in range(3)] + [task(10 + i, "b", seconds=30) for i in range(30)]
         + [task(50 + i, "c") for i in range(100)])
    order = []
    while (r := window.pick(3)) is not None:
        order.append(r.offset)
        window.settled(r)
    first_a, second_a = [order.index(o) for o in (0, 1)]
    between = order[first_a + 1:second_a]
    assert sum(1 for o in between if 10 <= o < 40) == 10, order
    assert sum(1 for o in between if o >= 50) == 30, order


def test_one_key_runs_in_offset_order():
    window, member = ReadAhead(LEVELS, limit=10), Member()
    read(window, member, [task(i, "a") for i in range(5)] + [task(5 + i, None, partition=1) for i in range(2)])
    assert [window.pick(3).offset for _ in range(5)] == [0, 5, 1, 6, 2], "a's and the keyless tasks, in turns"
    single, m2 = ReadAhead(LEVELS, limit=10), Member()
    read(single, m2, [task(i, "a") for i in range(5)])
    assert [single.pick(3).offset for _ in range(5)] == [0, 1, 2, 3, 4]


def test_priorities_are_held_apart_and_bounded_each():
    window, member = ReadAhead(LEVELS, limit=3), Member()
    read(window, member, [task(i, "a") for i in range(3)])
    assert window.room(3) == 0 and window.room(5) == 3, "each level's window has its own bound"
    read(window, member, [task(0, "b", topic="tasks.p5")])
    assert window.held_by_topic() == {"tasks": 3, "tasks.p5": 1}
    assert window.pick(5).topic == "tasks.p5"
    assert window.pick(5) is None


def test_the_offset_committed_stays_below_a_task_not_ended():
    window, member = ReadAhead(LEVELS, limit=10), Member()
    records = [task(0, "a"), task(1, "a"), task(3, "b"), task(4, "b")]  # 2: a transaction marker
    read(window, member, records)
    first, b = window.pick(3), window.pick(3)
    assert (first.offset, b.offset) == (0, 3)
    assert committed_offset(window, b) == 0, "b's task ends above a's first, still running: the offset stays"
    window.settled(b)
    assert committed_offset(window, first) == 1, "a's first ends: up to a's second, not yet started"
    window.settled(first)
    second = window.pick(3)
    assert second.offset == 1 and committed_offset(window, second) == 4, "past b's task that ended, to b's next"
    window.settled(second)
    last = window.pick(3)
    assert last.offset == 4 and committed_offset(window, last) == 5, "the last: past everything read"


def test_a_partition_taken_away_drops_its_records_and_one_given_back_keeps_them():
    window, member = ReadAhead(LEVELS, limit=10), Member()
    read(window, member, [task(0, "a"), task(1, "a"), task(0, "b", partition=1)])
    claim0 = window.claim_of(task(0, "a"))
    assert claim0.resume_at == 2, "given back, fetching goes on past what was read"
    claim0.revoke()
    assert window.pick(3).partition == 1, "nothing of a partition in a rebalance runs"
    assert not window.add(task(2, "a"), member, {}), "nor is read: it is fetched again"
    claim0.settle([claim0.tp], 2)
    assert claim0.state is ClaimState.HELD and window.pick(3).offset == 0
    lost = window.claim_of(task(0, "b", partition=1))
    assert window.lost(lost) == 0 and window.lost(claim0) == 1
    assert window.pick(3) is None and not window.owns(claim0)


def test_a_task_left_uncommitted_waits_again_first_of_its_key():
    window, member = ReadAhead(LEVELS, limit=10), Member()
    read(window, member, [task(0, "a"), task(1, "a")])
    first = window.pick(3)
    window.put_back(first)
    assert window.pick(3).offset == 0
    window.settled(first)
    window.put_back(first)
    assert window.pick(3).offset == 1, "an ended task is never put back"


@st.composite
def histories(draw):
    keys = draw(st.lists(st.sampled_from(["a", "b", "c", None]), min_size=1, max_size=40))
    gaps = draw(st.lists(st.integers(1, 2), min_size=len(keys), max_size=len(keys)))
    offsets = [sum(gaps[:i + 1]) for i in range(len(keys))]
    running = draw(st.integers(1, 4))  # tasks started and not yet ended at once (the pipeline's few)
    ends = draw(st.lists(st.integers(0, running - 1), min_size=len(keys), max_size=len(keys)))
    return list(zip(offsets, keys)), running, ends


@settings(max_examples=fuzz_examples(), deadline=None)
@given(histories())
def test_offsets_committed_never_pass_a_task_not_ended_and_never_go_back(history):
    records, running, ends = history
    window, member = ReadAhead(LEVELS, limit=len(records)), Member()
    read(window, member, [task(o, k) for o, k in records])
    started: list[Record] = []
    ended: set[int] = set()
    last = 0
    for end in ends:
        while len(started) < running and (r := window.pick(3)) is not None:
            started.append(r)
        if not started:
            break
        r = started.pop(min(end, len(started) - 1))
        offset = committed_offset(window, r)
        ended.add(r.offset)
        assert offset >= last, "the committed offset never goes back"
        assert all(o in ended for o, _ in records if o < offset), "never past a task not ended"
        window.settled(r)
        last = offset
    if len(ended) == len(records):
        assert last == records[-1][0] + 1, "once every task ended: past the last"


def test_nothing_is_committed_for_a_partition_that_went():
    window, member = ReadAhead(LEVELS, limit=10), Member()
    read(window, member, [task(0, "a")])
    record = window.pick(3)
    claim = window.claim_of(record)
    claim.revoke()
    claim.settle([], 2)
    window.lost(claim)
    assert window.offsets_with(record) == {}
    window.settled(record)  # the commit did not happen: nothing to forget


def test_a_message_that_names_no_task_runs_only_in_offset_order():
    """It has no status record to tell that it ended: run above a task not yet ended, it would be
    redelivered and rejected again, a second result."""
    window, member = ReadAhead(LEVELS, limit=10), Member()
    garbage = Record("tasks", 0, 2, b"[" * 100000 + b"]" * 100000)  # not json past the parser's depth
    read(window, member, [task(0, "a"), task(1, "a"), garbage, task(3, "b")])
    first = window.pick(3)
    assert first.offset == 0
    assert window.pick(3).offset == 3, "b's turn; the keyless message waits for the offsets below it"
    assert window.pick(3).offset == 1
    window.settled(first)
    assert window.pick(3) is None, "offset 1 has not ended"
    window.settled(task(1, "a"))
    assert window.pick(3) is garbage


def test_only_a_record_there_before_this_member_read_its_partition_may_have_ended():
    """A record written later was never another member's: its status need not be read."""
    window, member = ReadAhead(LEVELS, limit=10), Member()
    first = task(0, "a")
    assert window.unread([first, task(0, "b", partition=1)]) == [TopicPartition("tasks", 0), TopicPartition("tasks", 1)]
    read(window, member, [first, task(1, "a"), task(5, "a")], ends={TopicPartition("tasks", 0): 2})
    read(window, member, [task(0, "b", partition=1)])  # its end unknown
    assert window.unread([task(9, "a")]) == []
    assert [window.may_have_ended(task(o, "a")) for o in (0, 1, 5)] == [True, True, False]
    assert window.may_have_ended(task(7, "b", partition=1)), "an end not known: every record is checked"
    window.lost(window.claim_of(first))
    assert window.may_have_ended(task(5, "a")), "read again after it went: checked again"
