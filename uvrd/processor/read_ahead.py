"""The task records a processor has read ahead of the one it runs (``processor.fair_share``), so that
the next task can be chosen by its key's turn (key_turns.py: deficit round robin by the audio seconds
each task message carries) and not only by its offset.

What it holds, per priority level: up to ``fair_share_window`` records not yet started (and about
``WINDOW_BYTES`` of their messages), grouped by the API key that queued them.  What it keeps, per
partition: an :class:`~uvrd.kafka.offset_ledger.OffsetLedger` of every record read and not yet
committed, so that tasks may finish out of offset order while the committed offset never passes
one that has not: each result still goes out in its own transaction, with the offset of the lowest
record read and not finished (or one past the last read).  A crash or a rebalance redelivers the
records above it, finished ones included; the processor recognises those by their status
(boards/ended_tasks.py) and runs none twice.  Only a record below the partition's end when this
member began reading it can be such a redelivery (a record written later was never another
member's): :meth:`ReadAhead.may_have_ended` says which, so that the status topic is read through its
end only for those, not before every task.

Each partition's records are held under one :class:`~uvrd.kafka.group_member.Claim`, which lives as
long as the partition is this member's: a rebalance that gives it back in the next generation keeps
the window (the member seeks past everything read, ``resume_at``); one that takes it away drops its
records (:meth:`ReadAhead.lost`), which its next owner reads again from the committed offset.

Only the daemon's main thread calls it; it makes no Kafka call of its own.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from kafka import TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.structs import OffsetAndMetadata

from uvrd import messages
from uvrd.kafka.commit_mode import Offsets
from uvrd.kafka.group_member import Claim, GroupMember
from uvrd.kafka.offset_ledger import OffsetLedger
from uvrd.processor.key_turns import NO_KEY, KeyTurns, Lane

# The messages read ahead of one priority level, at most (and one poll's worth beyond it): a task
# message is small (about 500 bytes), but may be up to messages.MAX_MESSAGE_BYTES.
WINDOW_BYTES = 32 << 20


@dataclass(frozen=True, eq=False)
class _Waiting:
    record: ConsumerRecord
    size: int
    # Whether the message names its task_uuid.  One that does not has no status record to tell that
    # it ended, so it runs only as the lowest record of its partition not yet ended: its commit then
    # moves the offset past it, and it is never redelivered.
    identified: bool
    seconds: float | None  # its input's length, as the api measured it (None: not said)


class ReadAhead:
    def __init__(self, levels: dict[str, int], limit: int, max_bytes: int = WINDOW_BYTES) -> None:
        """*levels*: each task topic's priority; *limit*: the records held per level, at most."""
        self.levels = levels
        self.limit = limit
        self.max_bytes = max_bytes
        self._ledgers: dict[TopicPartition, OffsetLedger[bool]] = {}
        # Each partition's end when its ledger began: below it, a record may have ended already.
        self._fresh_from: dict[TopicPartition, float] = {}
        # level -> key -> its records not yet started, in the order read (per partition: offset order).
        self._waiting: dict[int, dict[Lane, deque[_Waiting]]] = {}
        self._turns: dict[int, KeyTurns] = {}

    # -- reading ahead ----------------------------------------------------------------------------
    def held(self, level: int) -> int:
        return sum(len(q) for q in self._waiting.get(level, {}).values())

    def held_by_topic(self) -> dict[str, int]:
        """The records waiting here per task topic: the priorities count them as backlog."""
        counts: dict[str, int] = {}
        for lanes in self._waiting.values():
            for queue in lanes.values():
                for w in queue:
                    counts[w.record.topic] = counts.get(w.record.topic, 0) + 1
        return counts

    def runnable(self, level: int) -> bool:
        """Whether a record of *level* here may run now (pick would give one)."""
        return any(self._runnable(w) for q in self._waiting.get(level, {}).values() for w in q)

    def room(self, level: int) -> int:
        """How many more records of *level* may be read ahead now."""
        size = sum(w.size for q in self._waiting.get(level, {}).values() for w in q)
        return 0 if size >= self.max_bytes else max(0, self.limit - self.held(level))

    def unread(self, records: list[ConsumerRecord]) -> list[TopicPartition]:
        """The partitions of *records* not read here yet (or since they last went): :meth:`add` wants
        their end offsets."""
        return sorted({TopicPartition(r.topic, r.partition) for r in records} - set(self._ledgers))

    def add(self, record: ConsumerRecord, member: GroupMember, ends: dict[TopicPartition, int]) -> bool:
        """Hold *record*; False if it may not be taken now (its partition is in a rebalance not yet
        over): the caller seeks back to it, so that it is fetched again.  *ends*: the end offsets of
        the partitions :meth:`unread` named, taken after the poll that fetched *record* (one missing:
        every record of its partition may have ended)."""
        tp = TopicPartition(record.topic, record.partition)
        ledger = self._ledgers.get(tp)
        if ledger is None:
            ledger = self._ledgers[tp] = OffsetLedger(member.claim(tp))
            self._fresh_from[tp] = ends.get(tp, float("inf"))
        if not ledger.claim.held:
            return False
        if ledger.taken(record.offset):
            return True  # held or done already: fetched again by a seek below it; nothing to add
        ledger.take(record.offset)
        # Ours again after a rebalance: fetching goes on past everything read (group_member.py).
        ledger.claim.resume_at = ledger.next_to_take
        level = self.levels.get(record.topic, 0)
        lanes = self._waiting.setdefault(level, {})
        lane, identified, seconds = _read(record)
        lanes.setdefault(lane, deque()).append(_Waiting(record, len(record.value or b""), identified, seconds))
        return True

    def pick(self, level: int) -> ConsumerRecord | None:
        """The next record of *level* to run: the oldest of the key whose turn it is, among the keys
        with a record of a partition held now; None if there is none."""
        lanes = self._waiting.get(level, {})
        # Each key's oldest record that may run now, which its turn would run.
        first = {lane: w for lane, queue in lanes.items() if (w := next(filter(self._runnable, queue), None)) is not None}
        lane = self._turns.setdefault(level, KeyTurns()).next({k: w.seconds for k, w in first.items()})
        if lane is None:
            return None
        queue = lanes[lane]
        chosen = first[lane]
        queue.remove(chosen)
        if not queue:
            del lanes[lane]
        return chosen.record

    def put_back(self, record: ConsumerRecord) -> None:
        """*record* was picked but not finished and its partition is still ours (a run abandoned): it
        waits again, first of its key, and its seconds go back to its key's turns (charged when it runs)."""
        ledger = self._ledger_of(record)
        if ledger is None or record.offset not in ledger.unfinished():
            return
        level = self.levels.get(record.topic, 0)
        lanes = self._waiting.setdefault(level, {})
        lane, identified, seconds = _read(record)
        lanes.setdefault(lane, deque()).appendleft(_Waiting(record, len(record.value or b""), identified, seconds))
        if (turns := self._turns.get(level)) is not None:
            turns.refund(lane, seconds)

    # -- claims and commits -----------------------------------------------------------------------
    def claim_of(self, record: ConsumerRecord) -> Claim:
        """The claim *record*'s partition is held under (the one for all of its records)."""
        ledger = self._ledger_of(record)
        if ledger is None:
            raise KeyError(f"{record.topic}/{record.partition} is not read ahead")
        return ledger.claim

    def may_have_ended(self, record: ConsumerRecord) -> bool:
        """Whether *record*'s task may have ended already under another member (or before a restart):
        it was in the partition before this member began reading it."""
        return record.offset < self._fresh_from.get(TopicPartition(record.topic, record.partition), float("inf"))

    def owns(self, claim: Claim) -> bool:
        ledger = self._ledgers.get(claim.tp)
        return ledger is not None and ledger.claim is claim

    def offsets_with(self, record: ConsumerRecord) -> Offsets:
        """What to commit with *record*'s result: its partition's offset once *record* is finished,
        that is the lowest other record read and not finished, or one past the last read.  Always
        the partition's offset, even where it does not move: the commit is then fenced by the
        group's generation like any other.  Nothing if the partition went to another member meanwhile
        (its claim is lost: nothing is committed under it)."""
        ledger = self._ledger_of(record)
        if ledger is None:
            return {}
        below = [o for o in ledger.unfinished() if o != record.offset]
        to = below[0] if below else ledger.next_to_take
        assert to is not None, "a record of the partition was read"
        return {ledger.tp: OffsetAndMetadata(to, "", -1)}

    def settled(self, record: ConsumerRecord) -> None:
        """*record*'s result (or, for one settled before, its offset alone) is committed."""
        ledger = self._ledger_of(record)
        if ledger is None or record.offset not in ledger.unfinished():
            return
        ledger.finish(record.offset, True)
        if (ready := ledger.ready()) is not None:
            ledger.committed(ready.next_offset)

    def lost(self, claim: Claim) -> int:
        """*claim*'s partition went to another member: its records are dropped (its next owner reads
        them again from the committed offset).  How many were waiting."""
        if not self.owns(claim):
            return 0
        del self._ledgers[claim.tp]
        self._fresh_from.pop(claim.tp, None)
        dropped = 0
        for lanes in self._waiting.values():
            for lane, queue in list(lanes.items()):
                kept = deque(w for w in queue if TopicPartition(w.record.topic, w.record.partition) != claim.tp)
                dropped += len(queue) - len(kept)
                if kept:
                    lanes[lane] = kept
                else:
                    del lanes[lane]
        return dropped

    def _ledger_of(self, record: ConsumerRecord) -> OffsetLedger[bool] | None:
        return self._ledgers.get(TopicPartition(record.topic, record.partition))

    def _runnable(self, waiting: _Waiting) -> bool:
        """Whether *waiting*'s record may run now: its partition is held (not in a rebalance), and
        it names its task, or is the lowest record of its partition not yet ended."""
        ledger = self._ledger_of(waiting.record)
        if ledger is None or not ledger.claim.held:
            return False
        return waiting.identified or ledger.unfinished()[:1] == [waiting.record.offset]


def _read(record: ConsumerRecord) -> tuple[Lane, bool, float | None]:
    """The API key that queued *record*'s task (NO_KEY when it names none, or is no task: the
    processor rejects it in its turn), whether it names its task_uuid, and its audio seconds (None
    when it does not say, or says nonsense: it counts as one quantum then)."""
    data = messages.json_object(record.value) or {}
    key, task_uuid = data.get("key"), data.get("task_uuid")
    identified = isinstance(task_uuid, str) and messages.TASK_UUID_RE.fullmatch(task_uuid) is not None
    return (key if isinstance(key, str) else NO_KEY), identified, messages.audio_seconds_of(data)
