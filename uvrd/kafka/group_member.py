"""A daemon's membership of its consumer group: the consumer, its commits, and what rebalances did.

A :class:`GroupMember` owns the consumer, the commit mode (commit_mode.py) and the rebalance
listener.  Work on a taken record runs under a :class:`Claim` on the record's partition, and
the claim says what the group did to that partition meanwhile: still HELD, REVOKED by a
rebalance not yet over, or LOST to another member.

The rule for a claim, and why: kafka-python revokes every partition before each join and assigns
after it.  A partition assigned again in the very next generation never left us.  One assigned in
a later generation may have been another member's meanwhile (this member was frozen past its
session, a SIGSTOP or a paused VM), and that member may have redone and committed the record:
the claim is LOST even though the partition is ours again, so the work is dropped, not committed
twice.

Nothing is committed under a claim that is not HELD: the broker checks a transactional offset
commit's group generation, not who owns the partition, so a member that has joined the next
generation but not yet learnt its partition went elsewhere could otherwise commit a record the
new owner is redoing.
"""

from __future__ import annotations

import contextlib
import enum
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass

import kafka.errors as Errors
import structlog
from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.coordinator.base import MemberState

from uvrd.kafka import group_leave
from uvrd.kafka.commit_mode import CommitLost, CommitMode, Landed, Offsets, OutRecord
from uvrd.outcomes import CommitOutcome, Committed, NotCommitted
from uvrd.runtime.backoff import Backoff
from uvrd.runtime.deadline import Deadline
from uvrd.runtime.wait import Runtime

log = structlog.get_logger("uvrd.daemon")

CLOSE_TIMEOUT_S = 5.0
REWIND_TIMEOUT_MS = 2000
COMMIT_BACKOFF_S = (0.5, 10.0)


class ClaimState(enum.Enum):
    HELD = "held"
    REVOKED = "revoked"  # by a rebalance that has not finished yet
    LOST = "lost"        # some rebalance since the claim was made gave the partition to another member


@dataclass(eq=False)
class Claim:
    """Work on a partition's records, from taking them to their commit."""

    tp: TopicPartition
    generation: int | None  # the group generation that last gave us the partition
    resume_at: int | None = None  # where fetching goes on if the partition is given back
    state: ClaimState = ClaimState.HELD

    @property
    def held(self) -> bool:
        return self.state is ClaimState.HELD

    @property
    def lost(self) -> bool:
        return self.state is ClaimState.LOST

    def revoke(self) -> None:
        if self.state is ClaimState.HELD:
            self.state = ClaimState.REVOKED

    def settle(self, assigned: Collection[TopicPartition], generation: int | None) -> ClaimState:
        """The rebalance is over: HELD again only if the partition came back in the next generation."""
        if self.state is not ClaimState.LOST:
            back = (self.tp in assigned and generation is not None and self.generation is not None
                    and generation == self.generation + 1)
            self.state = ClaimState.HELD if back else ClaimState.LOST
            if back:
                self.generation = generation
        return self.state


class GroupMember:
    """The consumer, its commit mode and its claims.  Only the daemon's main thread calls it.

    *on_assigned*, *on_revoked* and *on_lost* let the handler act on a rebalance (the listener
    runs inside the consumer's poll); the member has settled its claims before it calls them.
    """

    def __init__(self, consumer: KafkaConsumer, commit_mode: CommitMode, runtime: Runtime, *,
                 on_assigned: Callable[[Collection[TopicPartition]], None] = lambda assigned: None,
                 on_revoked: Callable[[Collection[TopicPartition]], None] = lambda revoked: None,
                 on_lost: Callable[[Claim], None] = lambda claim: None) -> None:
        self.consumer = consumer
        self.commit_mode = commit_mode
        self.runtime = runtime
        self._on_assigned, self._on_revoked, self._on_lost = on_assigned, on_revoked, on_lost
        self.claims: list[Claim] = []
        self.busy = False  # work runs: every partition stays paused
        self.connected_at = time.monotonic()
        self.joined_at = float("-inf")  # when the last rebalance gave this member its partitions
        # The last assignment and its generation, and the partitions whose position is not to be
        # trusted until they are sought to the group's committed offset (see _assigned).
        self._assignment: set[TopicPartition] = set()
        self._generation: int | None = None
        self._rewind: set[TopicPartition] = set()
        # When the rebalance this member is in began (None: it holds its assignment), and whether the
        # journal was told that it lasts too long.
        self._rebalance_began: float | None = None
        self._overdue_told = False

    def subscribe(self, topics: list[str]) -> None:
        self.consumer.subscribe(topics, listener=_Listener(self))

    def close(self) -> None:
        """Leave the group (its partitions move at once), then close the producer."""
        try:
            group_leave.close(self.consumer, Deadline.after(CLOSE_TIMEOUT_S))
        finally:
            self.commit_mode.close(CLOSE_TIMEOUT_S)

    # -- claims -------------------------------------------------------------------------------
    def claim(self, tp: TopicPartition, resume_at: int | None = None) -> Claim:
        claim = Claim(tp, self.generation(), resume_at)
        self.claims.append(claim)
        return claim

    def release(self, claim: Claim) -> None:
        with contextlib.suppress(ValueError):
            self.claims.remove(claim)

    def generation(self) -> int | None:
        generation: int | None = self.consumer.group_metadata().generation_id
        return generation

    def still_ours(self, claim: Claim) -> bool:
        """Whether *claim*'s partition is still ours, once any rebalance in progress is over;
        False also if the drain ended the wait."""
        woke = self.runtime.wait(until=lambda: claim.state is not ClaimState.REVOKED, through_drain=True)
        return woke.done and claim.held

    # -- polling ------------------------------------------------------------------------------
    def poll(self, timeout_ms: int, max_records: int) -> list[ConsumerRecord]:
        """Records from the partitions not paused, in the order fetched."""
        batches = self.consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        stale = set(self._rewind)
        self._rewind_to_committed()
        self._tell_overdue()
        # Fetched from a position _assigned does not trust: fetched again from the committed offset.
        return [record for tp, batch in batches.items() if tp not in stale for record in batch]

    def keep(self, timeout_ms: int = 100) -> None:
        """Poll with every partition paused: heartbeats and rebalances proceed, no records come."""
        self.pause_all()
        try:
            records = self.consumer.poll(timeout_ms=timeout_ms)
        finally:
            if not self.busy:
                self.resume_all()
        for tp, batch in records.items():
            # Cannot happen with every partition paused; if it does, rewind so nothing is skipped.
            self.consumer.seek(tp, batch[0].offset)
        self._rewind_to_committed()
        self._tell_overdue()

    def _rewind_to_committed(self) -> None:
        """Seek each partition _assigned does not trust the position of to the group's committed
        offset (after the poll: a rebalance listener is no place for a call to the broker).  One the
        broker does not answer for waits for the next poll; its records are not taken meanwhile."""
        if not self._rewind:  # every poll but those after a missed generation
            return
        assigned = self.consumer.assignment()
        for tp in sorted(self._rewind):
            if tp not in assigned:
                self._rewind.discard(tp)
                continue
            try:
                committed = self.consumer.committed(tp, timeout_ms=REWIND_TIMEOUT_MS)
            except Errors.KafkaError as e:
                log.warning("could not read a partition's committed offset; its records wait for the next try",
                            partition=f"{tp.topic}/{tp.partition}", error=str(e) or type(e).__name__)
                return
            if committed is None:  # nothing committed yet: where a new member of the group begins
                reset = self.consumer.config.get("auto_offset_reset", "earliest")
                (self.consumer.seek_to_end if reset == "latest" else self.consumer.seek_to_beginning)(tp)
            else:
                self.consumer.seek(tp, committed)
            self._rewind.discard(tp)
            log.info("partition kept across a generation without this member: fetching again from the "
                     "committed offset", partition=f"{tp.topic}/{tp.partition}", offset=committed)

    def pause_all(self) -> None:
        self.consumer.pause(*self.consumer.assignment())

    def resume_all(self) -> None:
        self.consumer.resume(*self.consumer.paused())

    @contextlib.contextmanager
    def working(self) -> Iterator[None]:
        """Every partition paused while the work runs: the consumer keeps polling for membership."""
        self.busy = True
        self.pause_all()
        try:
            yield
        finally:
            self.busy = False
            self.resume_all()

    # -- committing ---------------------------------------------------------------------------
    def commit_now(self, records: list[OutRecord], offsets: Offsets) -> None:
        """One try: CommitLost if the partition is gone, KafkaError if the broker failed it."""
        self.commit_mode.commit(records, offsets)

    def commit(self, records: list[OutRecord], offsets: Offsets, claim: Claim, landed: Landed | None = None) -> CommitOutcome:
        """Commit *records* with *offsets* under *claim*, retrying while the broker fails it; NotCommitted
        if it could not be done (the partition was lost, or the drain ended first): left for redelivery.
        *landed*: commit_mode.py's, for a commit whose offsets do not move."""
        backoff = Backoff(*COMMIT_BACKOFF_S)
        while True:
            if not self.still_ours(claim):
                if not claim.lost:  # held, or a rebalance not over: the wait for it ended first
                    log.warning("stop deadline reached before the commit; left for redelivery")
                    return NotCommitted("stop_deadline")
                log.warning("partition lost before the commit; another member redoes the record")
                return NotCommitted("partition_lost")
            try:
                self.commit_mode.commit(records, offsets, landed)
                return Committed()
            except CommitLost as e:
                log.warning("partition lost before the commit; another member redoes the record", error=str(e))
                return NotCommitted("partition_lost")
            except Errors.KafkaError as e:
                wait = backoff.next()
                log.warning("commit failed, retrying", error=str(e) or type(e).__name__, retry_in_s=wait)
                if not self.runtime.pause(wait, through_drain=True):
                    log.warning("stop deadline reached before the commit succeeded; left for redelivery")
                    return NotCommitted("stop_deadline")

    # -- what the coordinator said ------------------------------------------------------------
    def silence(self) -> float:
        """Seconds since the group coordinator last answered a heartbeat.

        kafka-python's public metric counts heartbeats *sent*, which go on while the broker is
        silent; the answer time is what shows the broker is reachable.
        """
        heartbeat = getattr(getattr(self.consumer, "_coordinator", None), "heartbeat", None)
        answered = getattr(heartbeat, "last_receive", float("-inf"))
        return time.monotonic() - max(answered, self.connected_at)

    def surely_in_the_group(self, session_timeout_ms: int, heartbeat_interval_ms: int) -> bool:
        """Whether the group cannot have moved on without this member: it is in a stable generation,
        wants no rejoin, and heard from the coordinator (a heartbeat answered, or a join) well inside
        a session timeout.

        A member frozen past its session wakes up believing it still holds its partitions while
        their new owner redoes its work; until its heartbeat thread and the next poll find out, it
        must not commit.  Kafka would fence such a commit by its generation, but not every broker
        does (Tansu takes it).
        """
        coordinator = getattr(self.consumer, "_coordinator", None)
        heartbeat = getattr(coordinator, "heartbeat", None)
        if coordinator is None or heartbeat is None:
            return True
        if coordinator.state is not MemberState.STABLE or coordinator.need_rejoin() or coordinator.coordinator_unknown():
            return False
        # Not heartbeat.last_reset: finding the coordinator again resets it, and says nothing of the group.
        heard: float = max(heartbeat.last_receive, self.joined_at)
        return time.monotonic() - heard < (session_timeout_ms - heartbeat_interval_ms) / 1000

    # -- a rebalance that does not end ---------------------------------------------------------
    def rebalance_overdue(self) -> float | None:
        """How long the rebalance this member is in has lasted, once that is longer than a working
        broker lets one last (every member's rejoin within max_poll_interval_ms, a dead member's
        session on top); None otherwise.  A broker that never lets the group form again (Tansu's
        leaderless round, group_leave.py) is seen so, not as a member waiting in silence."""
        if self._rebalance_began is None:
            return None
        lasted = time.monotonic() - self._rebalance_began
        bound_ms = self.consumer.config["max_poll_interval_ms"] + self.consumer.config["session_timeout_ms"]
        return lasted if lasted > bound_ms / 1000 else None

    def _tell_overdue(self) -> None:
        """Once per rebalance, the journal says that it lasts too long (STATUS says so meanwhile)."""
        if self._overdue_told or (lasted := self.rebalance_overdue()) is None:
            return
        self._overdue_told = True
        log.warning("the consumer group has not formed: this member's rebalance lasts longer than the broker "
                    "should let one last; its partitions wait", group_id=self.consumer.config["group_id"],
                    lasted_s=round(lasted, 1), max_poll_interval_ms=self.consumer.config["max_poll_interval_ms"],
                    session_timeout_ms=self.consumer.config["session_timeout_ms"])

    # -- rebalances (inside poll) -------------------------------------------------------------
    def _revoked(self, revoked: Collection[TopicPartition]) -> None:
        log.info("partitions revoked", partitions=_names(revoked))
        if self._rebalance_began is None:
            self._rebalance_began, self._overdue_told = time.monotonic(), False
        for claim in self.claims:
            if claim.tp in revoked:
                claim.revoke()
        self._on_revoked(revoked)

    def _assigned(self, assigned: Collection[TopicPartition]) -> None:
        log.info("partitions assigned", partitions=_names(assigned))
        self.joined_at = time.monotonic()
        if self._overdue_told:
            log.info("the consumer group formed again", group_id=self.consumer.config["group_id"],
                     lasted_s=round(self.joined_at - (self._rebalance_began or self.joined_at), 1))
        self._rebalance_began = None
        generation = self.generation()
        # kafka-python keeps the fetch position of a partition that stays in the assignment.  Only in
        # the very next generation was it ours all along; after one without this member (its join cut
        # short by another member's, or its session lost), another member may have committed past that
        # position, or nobody committed the records taken here, whose claims are now lost: either way
        # fetching starts again at the group's committed offset, or records would be skipped (three of
        # 500 tasks lost in a `make faults` run) or redone.
        if generation is None or self._generation is None or generation != self._generation + 1:
            self._rewind |= self._assignment & set(assigned)
        self._rewind &= set(assigned)
        self._assignment, self._generation = set(assigned), generation
        for claim in list(self.claims):
            if claim.settle(assigned, generation) is ClaimState.LOST:
                self.claims.remove(claim)
                self._on_lost(claim)
            elif claim.resume_at is not None:
                # Ours all along: the work in flight goes on (or its commit is on the way), and
                # fetching resumes past it, wherever the client's position was left.
                self.consumer.seek(claim.tp, claim.resume_at)
        if self.busy:
            self.consumer.pause(*assigned)
        self._on_assigned(assigned)


def _names(partitions: Iterable[TopicPartition]) -> list[str]:
    return sorted(f"{tp.topic}/{tp.partition}" for tp in partitions)


# kafka-python ships no stubs (its listener class is Any to mypy), and subscribe() takes only an
# instance of it.
class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, member: GroupMember) -> None:
        self.member = member

    def on_partitions_revoked(self, revoked: Collection[TopicPartition]) -> None:
        self.member._revoked(revoked)

    def on_partitions_assigned(self, assigned: Collection[TopicPartition]) -> None:
        self.member._assigned(assigned)
