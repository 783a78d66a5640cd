"""``uvrd uploader``: deliver each result to its webhook, exactly one success or one dead letter.

It consumes results (``read_committed``) and delivers up to ``uploader.concurrency``
of them at once, each in a thread of a :class:`DeliveryPool`
(uploader/delivery.py: a signed POST through the SSRF checks, the task_uuid as
idempotency key, a hard deadline per attempt, retries with backoff), so one
slow or hanging receiver holds one slot, not the uploader.  Only this main
loop touches Kafka: it polls, hands results to the pool and commits.

Deliveries finish in any order, but the offset moves only up to the lowest
unfinished result (offset_ledger.py), in one transaction with the status and
dead-letter records of every delivery finished below it; those finished above
it wait in memory.  A crash loses only outcomes that were never committed:
their results are delivered again by the next uploader (the receiver may get
the webhook twice, with one Idempotency-Key), and no status or dead-letter
record is duplicated or lost.  While it runs, a task gets one webhook however
many results it has (settled_tasks.py).

A stop takes no new result, lets the deliveries in flight go on inside the
drain window (a backoff wait ends at its deadline), commits what is
contiguous and leaves the rest uncommitted for the next uploader.  A rebalance
that takes a partition away for good abandons its deliveries (their outcomes
are dropped); one that gives it back keeps them.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import kafka.errors as Errors
import structlog
from kafka import TopicPartition
from kafka.structs import OffsetAndMetadata

from uvrd import messages
from uvrd.config import Config
from uvrd.kafka.commit_mode import CommitLost
from uvrd.daemon.consumer_daemon import POLL_MS, Membership
from uvrd.kafka.group_member import Claim, GroupMember
from uvrd.kafka.offset_ledger import OffsetLedger
from uvrd.metrics import uploader as uploader_metrics
from uvrd.outcomes import Abandoned, DeliveryOutcome, GaveUp
from uvrd.uploader.settlement import Settled, delivery_settlement, rejected_result
from uvrd.runtime import logs
from uvrd.runtime.backoff import Backoff
from uvrd.runtime.deadline import Deadline
from uvrd.runtime.wait import Runtime
from uvrd.boards.status import StatusBoard
from uvrd.storage import Storage, open_storage, retention
from uvrd.uploader.delivery import WebhookSender, describe
from uvrd.uploader.delivery_pool import DeliveryPool, Ticket
from uvrd.uploader.events import EventRelay
from uvrd.uploader.settled_tasks import SettledTasks

log = structlog.get_logger("uvrd.uploader")

# Polls while deliveries are in flight: short, so that a finished one is committed promptly.
BUSY_POLL_MS = 50
COMMIT_BACKOFF_S = (0.5, 10.0)


@dataclass(frozen=True, eq=False)
class Work:
    """A result in the delivery pool, and the ledger its offset is kept in."""

    ledger: OffsetLedger
    record: object  # the ConsumerRecord
    result: dict


class Uploader:
    name = "uploader"

    def __init__(self, config: Config, environ=None, clock: Callable[[], float] = time.time):
        """*clock*: the Unix time retention is judged by (tests move it)."""
        cfg = self.cfg = config.uploader
        self.config = config
        self.membership = Membership.of("uploader", cfg, [config.topics.results], True, environ)
        self.storage = open_storage(config)
        self.sender = WebhookSender(cfg, config.api.allow_private_urls, self.storage.link,
                                    config.api.result_retention)
        self.pool: DeliveryPool | None = None
        self.runtime: Runtime | None = None
        self.member: GroupMember | None = None
        self.relay: EventRelay | None = None
        self.ledgers: dict[TopicPartition, OffsetLedger[Settled]] = {}
        self.settled_tasks = SettledTasks()
        self._next_sweep = 0.0
        # Every task's status, which says whose files the retention sweep deletes (storage/retention.py).
        self.board = StatusBoard(config.kafka, config.topics.status)
        self.clock = clock
        self._commit_backoff = Backoff(*COMMIT_BACKOFF_S)
        self._next_commit = Deadline(0.0)
        self._retry: list | None = None  # the batch whose commit failed: tried again as it was

    # -- the daemon's hooks ---------------------------------------------------------------------
    def start(self, stack: contextlib.ExitStack, runtime: Runtime) -> bool:
        if not self.cfg.webhook_secret:
            log.warning("uploader.webhook_secret is empty: webhooks go out unsigned")
        self.runtime = runtime
        self.pool = DeliveryPool(self.cfg.concurrency)
        stack.callback(self.pool.close)  # closed last: after the Kafka clients, no delivery is collected
        self.relay = EventRelay(self.config)  # the events tasks opted into, apart from the results (events.py)
        stack.callback(self.relay.stop)
        self.board.start()
        stack.callback(self.board.stop)
        return True

    def join(self, member: GroupMember) -> None:
        self.member = member
        # Only now, once the daemon's topics are known to exist (boards/topic_check.py): a broker
        # that creates topics on first use would otherwise create a missing events topic here.
        self.relay.start()

    def activity(self) -> str | None:
        return _delivering(self.pool.in_flight() if self.pool is not None else [])

    def healthy(self) -> bool:
        return True

    def ready_fields(self) -> dict:
        return {"transactional_id": self.membership.transactional_id, "concurrency": self.cfg.concurrency}

    # -- the main loop: one step each turn, Kafka only here -------------------------------------
    def serve(self) -> None:
        """Each turn, Kafka only here: collect the deliveries that finished, commit what is ready, then
        take more results; once stopping, take none and keep the membership until everything taken
        is committed, or the drain window ends."""
        while self.runtime.turn(through_drain=True) is None:
            self._collect()
            self._commit_ready()
            if not self.runtime.lifecycle.stopping:
                self._sweep_if_due()
                self._poll(room=self.pool.free())
            elif self._uncommitted():
                self._poll(room=0)
            else:
                return
        # The drain window is over: what finished by now is still committed; the rest is left for the
        # next uploader.
        self._collect()
        self._commit_ready()
        if self._uncommitted():
            self._abandon_all()

    def _uncommitted(self) -> bool:
        return any(len(ledger) for ledger in self.ledgers.values())

    def _poll(self, room: int) -> None:
        """Poll for at most *room* results; with no room, for membership only (every partition paused)."""
        if room > 0:
            self.member.resume_all()
        else:
            self.member.pause_all()
        timeout_ms = BUSY_POLL_MS if self.pool.in_flight() else POLL_MS
        for record in self.member.poll(timeout_ms, max_records=max(room, 1)):
            tp = TopicPartition(record.topic, record.partition)
            ledger = self.ledgers.get(tp)
            if room <= 0 or (ledger is not None and not ledger.claim.held):
                # Not taken: fetched again once there is room (or once the rebalance is over).
                self.member.consumer.seek(tp, record.offset)
                continue
            room -= self._take(record)
        logs.bind_task()

    def _take(self, record) -> int:
        """Start on *record*; the number of pool slots that took (0 or 1)."""
        tp = TopicPartition(record.topic, record.partition)
        ledger = self.ledgers.get(tp)
        if ledger is None:
            ledger = self.ledgers[tp] = OffsetLedger(self.member.claim(tp))
        logs.bind_task(topic=record.topic, partition=record.partition, offset=record.offset)
        if ledger.taken(record.offset):
            log.warning("a record in flight was fetched again; skipped")
            return 0
        ledger.take(record.offset)
        # Ours again after a rebalance: fetching goes on past everything taken.
        ledger.claim.resume_at = ledger.next_to_take
        try:
            result = _parse_result(record.value, self.storage)
        except Exception as e:
            error = str(e) if isinstance(e, ValueError) else f"result message could not be read: {describe(e)}"
            ledger.finish(record.offset, rejected_result(self.config.topics, record, error))
            uploader_metrics.unreadable_result()
            return 0
        task_uuid = result["task_uuid"]
        delivering = messages.delivery_id(task_uuid, messages.replay_of(result))
        if delivering in self.settled_tasks or \
                any(t.label == delivering and t.key.ledger is ledger for t in self.pool.in_flight()):
            # Behind the first (same key and partition, this hold of it; a lost hold's outcomes are dropped).
            ledger.finish(record.offset, Settled((), "another result for a task whose webhook went out: not delivered",
                                                 "info", {"task_uuid": task_uuid}))
            return 0
        if not result.get("hook_url"):
            ledger.finish(record.offset, Settled((), "no hook_url: nothing to deliver", "info",
                                                 {"task_uuid": task_uuid}))
            return 0
        self.pool.submit(Ticket(Work(ledger, record, result), label=delivering), self._deliver)
        return 1

    def _deliver(self, ticket: Ticket) -> DeliveryOutcome:
        """In a pool thread: no Kafka here."""
        work: Work = ticket.key
        r = work.record
        with structlog.contextvars.bound_contextvars(task_uuid=work.result["task_uuid"], topic=r.topic, partition=r.partition,
                                                     offset=r.offset):
            return self.sender.deliver(work.result, ticket.abandon)

    def _collect(self) -> None:
        for done in self.pool.collect():
            work: Work = done.ticket.key
            task_uuid = work.result["task_uuid"]
            if self.ledgers.get(work.ledger.tp) is not work.ledger:
                log.info("delivery outcome dropped: the partition moved to another uploader", task_uuid=task_uuid)
                continue
            outcome = done.outcome if done.error is None else \
                GaveUp(0, f"the delivery failed inside the uploader: {describe(done.error)}", "internal")
            uploader_metrics.delivered(outcome)
            if isinstance(outcome, Abandoned):
                # Only a stop's deadline abandons a delivery of a partition still held: the loop ends now.
                log.info("delivery left uncommitted for redelivery", task_uuid=task_uuid, reason=outcome.reason)
                continue
            work.ledger.finish(work.record.offset,
                               delivery_settlement(self.config.topics, work.record, work.result["task_uuid"], outcome,
                                                   messages.replay_of(work.result), work.result))

    def _commit_ready(self) -> None:
        """Commit, in one transaction, every partition's finished run up to its lowest unfinished result."""
        kc = self.config.kafka
        if not self._next_commit.expired() or \
                not self.member.surely_in_the_group(kc.session_timeout_ms, kc.heartbeat_interval_ms):
            return
        batch = self._retry
        if not batch or any(self.ledgers.get(ledger.tp) is not ledger or not ledger.claim.held for ledger, _ in batch):
            # A partition in a rebalance not yet over may be going to another member: it waits.
            batch = [(ledger, ready) for ledger in self.ledgers.values()
                     if ledger.claim.held and (ready := ledger.ready()) is not None]
        self._retry = None
        if not batch:
            return
        out = [r for _, ready in batch for settled in ready.outcomes for r in settled.records]
        offsets = {ledger.tp: OffsetAndMetadata(ready.next_offset, "", -1) for ledger, ready in batch}
        try:
            self.member.commit_now(out, offsets)
        except (CommitLost, Errors.KafkaError) as e:
            # Kept, not dropped: tried again after a backoff, unless a rebalance takes the partition away.
            wait = self._commit_backoff.next()
            log.warning("commit failed, retrying", error=str(e) or type(e).__name__, retry_in_s=wait)
            self._next_commit = Deadline.after(wait)
            # The same batch again, not a grown one: a try that landed after all is only recognised as
            # such by its own offsets (commit_mode.py), and must never be committed twice.
            self._retry = batch
            return
        self._commit_backoff.reset()
        for ledger, ready in batch:
            ledger.committed(ready.next_offset)
            for settled in ready.outcomes:
                if task_uuid := settled.fields.get("task_uuid"):
                    self.settled_tasks.add(messages.delivery_id(task_uuid, settled.fields.get("replay", 0)))
                getattr(log, settled.level)(settled.event, **settled.fields)

    def _abandon_all(self) -> None:
        flying = self.pool.in_flight()
        for ticket in flying:
            ticket.abandon.set()
        left = sum(len(ledger) for ledger in self.ledgers.values())
        log.warning("stop deadline reached: results left uncommitted for the next uploader", uncommitted=left,
                    deliveries_in_flight=len(flying))

    # -- rebalances (the member has settled its claims) ------------------------------------------
    def on_revoked(self, revoked) -> None:
        pass  # a revoked partition's claim is not held: nothing of it is taken or committed meanwhile

    def on_assigned(self, assigned) -> None:
        if self.pool.free() == 0 or self.runtime.lifecycle.stopping:
            self.member.consumer.pause(*assigned)

    def on_lost(self, claim: Claim) -> None:
        ledger = self.ledgers.get(claim.tp)
        if ledger is None or ledger.claim is not claim:
            return
        del self.ledgers[ledger.tp]
        flying = [t for t in self.pool.in_flight() if t.key.ledger is ledger]
        for ticket in flying:
            ticket.abandon.set()
        log.warning("partition moved to another uploader: its uncommitted results are left to it",
                    partition=f"{ledger.tp.topic}/{ledger.tp.partition}", uncommitted=len(ledger),
                    deliveries_abandoned=len(flying), held_in_generation=claim.generation,
                    generation=self.member.generation())

    def _sweep_if_due(self) -> None:
        """Every retention_interval, once the status board has caught up (until then a queued task's
        input could pass for an orphan, and a finished task's expiry is unknown): the files of tasks
        that expired or whose stems were deleted, and orphans by their age (storage/retention.py)."""
        now = time.monotonic()
        if now < self._next_sweep:
            return
        if not self.board.caught_up:
            self._next_sweep = now + min(1.0, self.cfg.retention_interval)
            return
        self._next_sweep = now + self.cfg.retention_interval
        self.sweep()

    def sweep(self) -> int:
        at = self.clock()
        keep_for = self.config.api.result_retention
        return self.storage.sweep(at, lambda task_uuid: retention.verdict(self.board.get(task_uuid), keep_for, at))


def _delivering(flying: list[Ticket]) -> str | None:
    """STATUS= while webhooks are in flight."""
    if not flying:
        return None
    oldest = flying[0]
    return (f"delivering {len(flying)} webhook{'s' if len(flying) > 1 else ''}, "
            f"the oldest ({oldest.label}) for {oldest.age():.0f} s")


def _parse_result(raw: bytes | None, storage: Storage | None = None) -> dict:
    """The result, checked; *storage* (default: the local backend's rules) judges its stem references."""
    if raw is None:
        raise ValueError("result message is empty (a tombstone)")
    if len(raw) > messages.MAX_MESSAGE_BYTES:
        raise ValueError(f"result message is {len(raw)} bytes, over the {messages.MAX_MESSAGE_BYTES}-byte limit")
    try:
        result = json.loads(raw)
    except UnicodeDecodeError as e:
        raise ValueError(f"result message is not UTF-8 ({e.reason} at byte {e.start})") from None
    except RecursionError:
        raise ValueError("result message is JSON nested too deeply") from None
    except ValueError as e:
        raise ValueError(f"result message is not JSON: {type(e).__name__}") from None
    if not isinstance(result, dict):
        raise ValueError("result message must be a JSON object")
    try:
        # A lone surrogate escape ("\ud800") is valid JSON but cannot go into a URL or a webhook body.
        json.dumps(result, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("result message holds text that is not valid Unicode (a lone surrogate escape)") from None
    except RecursionError:
        raise ValueError("result message is JSON nested too deeply") from None
    task_uuid = result.get("task_uuid")
    if not isinstance(task_uuid, str) or not messages.TASK_UUID_RE.fullmatch(task_uuid):
        raise ValueError("result has no valid task_uuid")
    if result.get("hook_url") is not None and not isinstance(result["hook_url"], str):
        raise ValueError("result field 'hook_url' must be a string or null")
    if not isinstance(result.get("success"), bool):
        raise ValueError("result field 'success' must be true or false")
    stems = result.get("stems") or {}
    if not isinstance(stems, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in stems.items()):
        raise ValueError("result field 'stems' must map stem names to paths")
    kind = result.get("storage", "local")
    if kind not in messages.STORAGE_KINDS:
        raise ValueError(f"result field 'storage' must be one of {', '.join(messages.STORAGE_KINDS)}")
    ours = storage.name if storage is not None else "local"
    # A failure names no object, so it is delivered whichever backend its processor used.
    if stems and kind != ours:
        raise ValueError(f"result's stems are in {kind} storage, but this uploader is configured for {ours} "
                         f"storage (storage.backend)")
    for name, ref in stems.items():
        problem = storage.ref_problem(ref) if storage is not None else None
        if problem:
            raise ValueError(f"result's stem {name[:100]!r} has a key that {problem}")
    return result
