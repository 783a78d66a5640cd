"""``uvrd uploader``: deliver each result to its webhook, exactly one success or one dead letter.

It consumes results (``read_committed``) and delivers up to ``uploader.concurrency``
of them at once, each in a thread of a :class:`DeliveryPool`
(webhook_delivery.py: a signed POST through the SSRF checks, the task_uuid as
idempotency key, a hard deadline per attempt, retries with backoff), so one
slow or hanging receiver holds one slot, not the uploader.  Only this main
loop touches Kafka: it polls, hands results to the pool and commits.

Deliveries finish in any order, but the offset moves only up to the lowest
unfinished result (offset_ledger.py), in one transaction with the status and
dead-letter records of every delivery finished below it; those finished above
it wait in memory.  A crash loses only outcomes that were never committed:
their results are delivered again by the next uploader (the receiver may get
the webhook twice, with one Idempotency-Key), and no status or dead-letter
record is duplicated or lost.

A stop takes no new result, lets the deliveries in flight go on inside the
drain window (a backoff wait ends at its deadline), commits what is
contiguous and leaves the rest uncommitted for the next uploader.  A rebalance
that takes a partition away for good abandons its deliveries (their outcomes
are dropped); one that gives it back keeps them.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass, field

import kafka.errors as Errors
import structlog
from kafka import TopicPartition
from kafka.coordinator.base import MemberState
from kafka.structs import OffsetAndMetadata

from . import logs, messages, status
from .config import Config
from .consumer_daemon import POLL_MS, Abandoned, ConsumerDaemon, default_transactional_id
from .deadline import Deadline
from .delivery import CommitLost, OutRecord, dead_letter
from .delivery_pool import DeliveryPool, Ticket
from .offset_ledger import OffsetLedger
from .storage import Storage, open_storage
from .webhook_delivery import Delivered, GaveUp, Outcome, WebhookSender, describe

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


@dataclass(frozen=True)
class Settled:
    """A result's part of a commit: its records, and what to log once they are in."""

    records: tuple[OutRecord, ...]
    event: str
    level: str = "info"
    fields: dict = field(default_factory=dict)


class Uploader(ConsumerDaemon):
    name = "uploader"

    def __init__(self, config: Config, environ=None):
        environ = os.environ if environ is None else environ
        cfg = config.uploader
        super().__init__(
            config, group_id=cfg.group_id, topics=[config.topics.results], drain_timeout=cfg.drain_timeout,
            broker_timeout=cfg.broker_timeout, exactly_once=True,
            transactional_id=cfg.transactional_id or default_transactional_id("uploader", environ),
            environ=environ,
        )
        self.cfg = cfg
        self.storage = open_storage(config)
        self.sender = WebhookSender(cfg, config.api.allow_private_urls, self.storage.link)
        self.pool: DeliveryPool | None = None
        self.ledgers: dict[TopicPartition, OffsetLedger[Settled]] = {}
        self._next_sweep = 0.0
        self._commit_wait = COMMIT_BACKOFF_S[0]
        self._next_commit = Deadline(0.0)
        self._joined_at = float("-inf")  # when the last rebalance gave this member its partitions

    def start(self, stack: contextlib.ExitStack) -> bool:
        if not self.cfg.webhook_secret:
            log.warning("uploader.webhook_secret is empty: webhooks go out unsigned")
        self.pool = DeliveryPool(self.cfg.concurrency)
        return True

    def before_poll(self) -> bool:
        self._sweep_if_due()
        return True

    def status(self) -> str:
        flying = self.pool.in_flight() if self.pool is not None else []
        if not flying:
            return super().status()
        oldest = flying[0]
        doing = (f"delivering {len(flying)} webhook{'s' if len(flying) > 1 else ''}, "
                 f"the oldest ({oldest.label}) for {oldest.age():.0f} s")
        if self.lifecycle.stopping:
            return f"draining: {doing}, {self.lifecycle.drain_left():.0f} s left"
        return doing

    def ready_fields(self) -> dict:
        return {"transactional_id": self.transactional_id, "concurrency": self.cfg.concurrency}

    # -- the main loop: one step each, Kafka only here ------------------------------------------
    def _loop(self) -> None:
        while True:
            self.tick()
            self._collect()
            self._commit_ready()
            if self.lifecycle.stopping:
                if not any(len(ledger) for ledger in self.ledgers.values()):
                    return
                if self.lifecycle.must_abandon():
                    self._abandon_all()
                    return
                self._poll(room=0)
                continue
            if not self.before_poll():
                return
            self._poll(room=self.pool.free())

    def _poll(self, room: int) -> None:
        """Poll for at most *room* results; with no room, for membership only (every partition paused)."""
        if room > 0:
            self.consumer.resume(*self.consumer.paused())
        else:
            self.consumer.pause(*self.consumer.assignment())
        timeout_ms = BUSY_POLL_MS if self.pool.in_flight() else POLL_MS
        records = self.consumer.poll(timeout_ms=timeout_ms, max_records=max(room, 1))
        for tp, batch in records.items():
            for record in batch:
                ledger = self.ledgers.get(tp)
                if room <= 0 or (ledger is not None and ledger.revoked):
                    # Not taken: fetched again once there is room (or once the rebalance is over).
                    self.consumer.seek(tp, record.offset)
                    break
                room -= self._take(record)
        logs.bind_task()

    def _take(self, record) -> int:
        """Start on *record*; the number of pool slots that took (0 or 1)."""
        tp = TopicPartition(record.topic, record.partition)
        ledger = self.ledgers.get(tp)
        if ledger is None:
            ledger = self.ledgers[tp] = OffsetLedger(tp)
            ledger.generation = self.consumer.group_metadata().generation_id
        logs.bind_task(topic=record.topic, partition=record.partition, offset=record.offset)
        if ledger.taken(record.offset):
            log.warning("a record in flight was fetched again; skipped")
            return 0
        ledger.take(record.offset)
        try:
            result = _parse_result(record.value, self.storage)
        except Exception as e:
            error = str(e) if isinstance(e, ValueError) else f"result message could not be read: {describe(e)}"
            ledger.finish(record.offset, Settled(
                (dead_letter(self.config.topics.dead_letter, record, error, "uploader"),), "result rejected",
                "warning", {"error": error, "offset": record.offset}))
            return 0
        task_uuid = result["task_uuid"]
        if not result.get("hook_url"):
            ledger.finish(record.offset, Settled((), "no hook_url: nothing to deliver", "info",
                                                 {"task_uuid": task_uuid}))
            return 0
        self.pool.submit(Ticket(Work(ledger, record, result), label=task_uuid), self._deliver)
        return 1

    def _deliver(self, ticket: Ticket) -> Outcome:
        """In a pool thread: no Kafka here."""
        work: Work = ticket.key
        r = work.record
        with structlog.contextvars.bound_contextvars(task_uuid=ticket.label, topic=r.topic, partition=r.partition,
                                                     offset=r.offset):
            return self.sender.deliver(work.result, ticket.abandon)

    def _collect(self) -> None:
        for done in self.pool.collect():
            work: Work = done.ticket.key
            task_uuid = done.ticket.label
            if self.ledgers.get(work.ledger.tp) is not work.ledger:
                log.info("delivery outcome dropped: the partition moved to another uploader", task_uuid=task_uuid)
                continue
            outcome = done.outcome if done.error is None else \
                GaveUp(0, f"the delivery failed inside the uploader: {describe(done.error)}")
            if isinstance(outcome, Abandoned):
                # Only a stop's deadline abandons a delivery of a partition still held: the loop ends now.
                log.info("delivery left uncommitted for redelivery", task_uuid=task_uuid, reason=outcome.reason)
                continue
            work.ledger.finish(work.record.offset, self._settled(work, outcome))

    def _settled(self, work: Work, outcome: Delivered | GaveUp) -> Settled:
        task_uuid = work.result["task_uuid"]
        topics = self.config.topics
        if isinstance(outcome, Delivered):
            return Settled(
                (status.record(topics.status, task_uuid, "delivered", delivered_at=messages.now_iso(),
                               delivery_attempts=outcome.attempts),),
                "webhook delivered", "info",
                {"task_uuid": task_uuid, "attempts": outcome.attempts, "http_status": outcome.status})
        error = f"webhook delivery failed: {outcome.reason}"
        return Settled(
            (dead_letter(topics.dead_letter, work.record, error, "uploader"),
             status.record(topics.status, task_uuid, "delivery_failed", delivery_error=error,
                           delivery_attempts=outcome.attempts)),
            "webhook dead-lettered", "warning",
            {"task_uuid": task_uuid, "attempts": outcome.attempts, "reason": outcome.reason})

    def _commit_ready(self) -> None:
        """Commit, in one transaction, every partition's finished run up to its lowest unfinished result."""
        if not self._next_commit.expired() or not self._surely_in_the_group():
            return
        # A partition in a rebalance not yet over may be going to another member: it waits.
        batch = [(ledger, ready) for ledger in self.ledgers.values()
                 if not ledger.revoked and (ready := ledger.ready()) is not None]
        if not batch:
            return
        out = [r for _, ready in batch for settled in ready.outcomes for r in settled.records]
        offsets = {ledger.tp: OffsetAndMetadata(ready.next_offset, "", -1) for ledger, ready in batch}
        try:
            self.delivery.commit(out, offsets)
        except (CommitLost, Errors.KafkaError) as e:
            # Kept, not dropped: tried again after a backoff, unless a rebalance takes the partition away.
            log.warning("commit failed, retrying", error=str(e) or type(e).__name__, retry_in_s=self._commit_wait)
            self._next_commit = Deadline.after(self._commit_wait)
            self._commit_wait = min(self._commit_wait * 2, COMMIT_BACKOFF_S[1])
            return
        self._commit_wait = COMMIT_BACKOFF_S[0]
        for ledger, ready in batch:
            ledger.committed(ready.next_offset)
            for settled in ready.outcomes:
                getattr(log, settled.level)(settled.event, **settled.fields)

    def _surely_in_the_group(self) -> bool:
        """Whether the group cannot have moved on without this member: it is in a stable generation,
        wants no rejoin, and heard from the coordinator (a heartbeat answered, or a join) well inside
        a session timeout.

        A member frozen past its session (SIGSTOP, a paused VM) wakes up believing it still holds
        its partitions while their new owner redoes its results; until its heartbeat thread and the
        next poll find out, it must not commit.  Kafka would fence such a commit by its generation,
        but not every broker does (Tansu takes it).
        """
        coordinator = getattr(self.consumer, "_coordinator", None)
        heartbeat = getattr(coordinator, "heartbeat", None)
        if heartbeat is None:
            return True
        if coordinator.state is not MemberState.STABLE or coordinator.need_rejoin() or coordinator.coordinator_unknown():
            return False
        # Not heartbeat.last_reset: finding the coordinator again resets it, and says nothing of the group.
        heard = max(heartbeat.last_receive, self._joined_at)
        kc = self.config.kafka
        return time.monotonic() - heard < (kc.session_timeout_ms - kc.heartbeat_interval_ms) / 1000

    def _abandon_all(self) -> None:
        flying = self.pool.in_flight()
        for ticket in flying:
            ticket.abandon.set()
        left = sum(len(ledger) for ledger in self.ledgers.values())
        log.warning("stop deadline reached: results left uncommitted for the next uploader", uncommitted=left,
                    deliveries_in_flight=len(flying))

    # -- rebalances ------------------------------------------------------------------------------
    def on_revoked(self, revoked) -> None:
        super().on_revoked(revoked)
        for tp in revoked:
            if tp in self.ledgers:
                self.ledgers[tp].revoked = True

    def on_assigned(self, assigned) -> None:
        super().on_assigned(assigned)
        self._joined_at = time.monotonic()
        generation = self.consumer.group_metadata().generation_id
        for tp, ledger in list(self.ledgers.items()):
            # Given back only if no generation passed without us: a member frozen past its session
            # is expelled, another owns the partition for a generation, and then it may come back.
            if tp not in assigned or ledger.generation is None or generation != ledger.generation + 1:
                self._lose(ledger)
                continue
            ledger.revoked, ledger.generation = False, generation
            if ledger.next_to_take is not None:
                # Ours again: a new assignment starts at the committed offset, below what is in flight.
                self.consumer.seek(tp, ledger.next_to_take)
        if self.pool.free() == 0 or self.lifecycle.stopping:
            self.consumer.pause(*assigned)

    def _lose(self, ledger: OffsetLedger) -> None:
        del self.ledgers[ledger.tp]
        flying = [t for t in self.pool.in_flight() if t.key.ledger is ledger]
        for ticket in flying:
            ticket.abandon.set()
        log.warning("partition moved to another uploader: its uncommitted results are left to it",
                    partition=f"{ledger.tp.topic}/{ledger.tp.partition}", uncommitted=len(ledger),
                    deliveries_abandoned=len(flying), held_in_generation=ledger.generation,
                    generation=self.consumer.group_metadata().generation_id)

    def _sweep_if_due(self) -> None:
        now = time.monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + self.cfg.retention_interval
        self.storage.sweep()


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
