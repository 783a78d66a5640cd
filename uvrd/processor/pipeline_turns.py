"""The processor's turns with ``processor.pipeline = true``: the task taken ahead of the model, the
one whose stems are encoded and stored behind it, and the order their results are committed in.
The stages and the tasks' records are in pipeline.py, which says why it is built this way; the task
in the model runs as in the sequential order (daemon.py, separation.py).
"""

from __future__ import annotations

import dataclasses
import time

import structlog

from uvrd import messages
from uvrd.kafka.group_member import Claim, GroupMember
from uvrd.metrics import processor as processor_metrics
from uvrd.outcomes import (Abandoned, Cancelled, Failed, Rejected, Stored, StoreFailed, StoreOutcome, Succeeded)
from uvrd.processor import decoded_input, stem_encoding
from uvrd.processor.accept import MAX_ERROR_CHARS, Accepted, accept
from uvrd.processor.engine_protocol import Separated
from uvrd.processor.pipeline import Ahead, Behind, FetchedInput, Stage
from uvrd.processor.pipeline_host import PipelineHost
from uvrd.processor.separation import Separation
from uvrd.processor.task_events import TaskEvents
from uvrd.runtime import logs
from uvrd.runtime.wait import Runtime

log = structlog.get_logger("uvrd.processor")
DRAIN_ENDED_IN_STORE = "the drain window ended before the stems were stored"


class PipelineTurns:
    """The pipelined processor's own steps, around its task in the model."""

    def __init__(self, processor: PipelineHost):
        self.p = processor
        self.ahead: Ahead | None = None
        self.behind: Behind | None = None
        self.fetching: Stage[FetchedInput] = Stage("fetch")
        self.storing: Stage[dict[str, str]] = Stage("store")

    @property
    def member(self) -> GroupMember:
        assert self.p.member is not None, "the daemon joins its group before it serves"
        return self.p.member

    @property
    def separation(self) -> Separation:
        assert self.p.separation is not None, "the daemon starts the processor before it serves"
        return self.p.separation

    @property
    def runtime(self) -> Runtime:
        assert self.p.runtime is not None, "the daemon starts the processor before it serves"
        return self.p.runtime

    def turn(self) -> None:
        """One turn of the serve loop: commit what the store stage finished while the queue was idle,
        then run the task taken ahead, or the next one polled."""
        self._settle_behind(wait=False)
        if (ahead := self.ahead) is None and (record := self.p.next_record()) is not None:
            ahead = self._take(record)
        if ahead is not None:
            self.ahead = None
            self._handle_ahead(ahead)

    def _take(self, record) -> Ahead:
        """*record* taken: claimed, accepted, and its input's fetch begun if the fetch stage is free.
        It is not free when the task taken before was abandoned (a rebalance, a cancellation, a
        redelivery of an ended task) while its fetch still ran, which a stage thread niced on a busy
        host can do for a long while: this task's input is then fetched in its turn, as in the
        sequential order, and the stage still holds one job at most."""
        self.p.priorities.served(record.topic)
        claim = self.p.claim(record)
        accepted = accept(record, self.p.cfg, self.p.storage.name)
        ahead = Ahead(record, claim, accepted)
        if isinstance(accepted, Accepted) and not self.fetching.busy and \
                not self.p.cancellations.requested_at(accepted.task.task_uuid):
            task = accepted.task
            ahead.fetched = self.fetching.start(lambda: self._fetch(task))
        return ahead

    def _fetch(self, task: messages.Task) -> FetchedInput:
        """The fetch stage's job: the task's input, and its samples decoded ahead of its turn."""
        path = self.p.storage.fetch_input(task)
        cfg = self.p.cfg
        started = time.monotonic()
        decoded = decoded_input.decode_ahead(path, cfg.output_dir, task.task_uuid, cfg.max_audio_seconds,
                                             cfg.chunk_seconds + cfg.chunk_overlap_seconds)
        if decoded is not None:  # the stage's own time, beside the model: the bench's per-stage figures
            log.info("input decoded ahead", next_task=task.task_uuid,
                     duration_ms=round((time.monotonic() - started) * 1000, 1))
        return FetchedInput(path, decoded)

    def beside_the_model(self) -> None:
        """Each turn of the wait for the task in the model: commit the task before it once its stems
        are stored (its result goes out now, not after this task), and take the next one."""
        behind = self.behind
        if behind is not None and behind.stored is not None and behind.stored.done() and \
                behind.stored.exception() is None:
            # Only a store that worked: one that failed is done again after this run, with its waits.
            self._settle_behind(wait=False)
        self._prefetch()
        if (ahead := self.ahead) is None:
            return
        if self.runtime.lifecycle.stopping or ahead.claim.lost:
            # Not to be run here any more: a stop leaves it for redelivery, a rebalance to another
            # member; its job, if it was sent ahead, stops now instead of at its turn.
            self.separation.forget_ahead()
        else:
            self._send_ahead(ahead)

    def _send_ahead(self, ahead: Ahead) -> None:
        """Once the task taken ahead has its input fetched and decoded, its job goes to the engine
        child, which prepares it beside this run's forward and begins its own forward as this one
        ends (device_gate.py).  Only the plain case: one model, loaded already, an input decoded ahead
        (so neither a model's load nor a long input's survey holds the child's turn from the run
        before); any other task is sent in its turn."""
        if ahead.sent or ahead.fetched is None or not ahead.fetched.done() or \
                ahead.fetched.exception() is not None or not isinstance(ahead.accepted, Accepted):
            return
        ahead.sent = True
        accepted, fetched = ahead.accepted, ahead.fetched.result()
        if fetched.decoded is None or len(accepted.plan.models) != 1 or \
                accepted.model not in self.separation.engine.models or \
                self.p.cancellations.requested_at(accepted.task.task_uuid):
            return
        if self.separation.send_ahead(accepted.task.task_uuid,
                                        self.p.job_for(accepted, fetched.path, fetched.decoded, pipelined=True)):
            log.info("next task's job sent to the engine ahead of its turn", next_task=accepted.task.task_uuid)

    def _prefetch(self) -> None:
        """Take the next task, if one waits and none was taken yet, and begin fetching its input."""
        if self.ahead is not None or self.runtime.lifecycle.stopping or self.fetching.busy:
            return
        try:
            record = self.p.next_record(0)  # with fair share, the next of the key whose turn it is
        finally:
            self.member.pause_all()  # the task in the model keeps every partition paused
        if record is not None:
            self.ahead = self._take(record)
            accepted = self.ahead.accepted
            log.info("next task taken while the model runs", next_offset=record.offset,
                     next_task=accepted.task.task_uuid if isinstance(accepted, Accepted) else accepted.task_uuid)

    def _handle_ahead(self, ahead: Ahead) -> None:
        """*ahead*'s turn in the model: as :meth:`handle`, each settlement after the task before it."""
        record, claim, accepted = ahead.record, ahead.claim, ahead.accepted
        logs.bind_task(topic=record.topic, partition=record.partition, offset=record.offset)
        handed_on = False
        try:
            if claim.lost:
                ahead.discard(self.p.storage.release_input)
                self._abandon(Abandoned("the partition was reassigned to another worker", "rebalance"))
                return
            if isinstance(accepted, Rejected):
                if not self.p.ended_before(record, accepted.task_uuid, accepted.replay, claim):
                    self._settle_in_order(record, None, accepted, claim)
                return
            structlog.contextvars.bind_contextvars(task_uuid=accepted.task.task_uuid)
            if self.p.ended_before(record, accepted.task.task_uuid, accepted.task.replay, claim):  # fair share: a redelivery of a task that ended
                ahead.discard(self.p.storage.release_input)
                return
            if requested_at := self.p.cancellation_of(accepted.task.task_uuid):
                ahead.discard(self.p.storage.release_input)
                self._settle_in_order(record, accepted.task, Cancelled(requested_at), claim)
                return
            outcome = self.p.process(accepted, claim, ahead)
            if outcome is None:  # separated: its stems are being stored behind the next task
                handed_on = True
                return
            if isinstance(outcome, Abandoned):
                self._abandon(outcome)
                self.p.put_back(record)
                return
            self._settle_in_order(record, accepted.task, outcome, claim)
        finally:
            # Its job, if it was sent to the engine ahead and its turn did not take it on, stops there.
            self.separation.forget_ahead(ahead.accepted.task_uuid if isinstance(ahead.accepted, Rejected)
                                           else ahead.accepted.task.task_uuid)
            if not handed_on:
                self.p.release(claim)
            logs.bind_task()

    def _abandon(self, outcome: Abandoned) -> None:
        log.info("task left uncommitted for redelivery", reason=outcome.reason)
        processor_metrics.settled(outcome)

    def await_fetch(self, ahead: Ahead) -> FetchedInput | Abandoned | BaseException:
        """The input the fetch stage got, or what it raised; Abandoned if a stop came first."""
        fetched = ahead.fetched
        assert fetched is not None
        if not self.runtime.wait(until=fetched.done, through_drain=False).done:
            return Abandoned("stopping before the task's turn in the model")
        return fetched.exception() or fetched.result()

    def _settle_in_order(self, record, task: messages.Task | None,
                         outcome: Succeeded | Failed | Cancelled | Rejected, claim: Claim) -> None:
        """Settle after the task before it: offsets are committed in their order."""
        self._settle_behind(wait=True)
        self.p.settle(record, task, outcome, claim)

    def hand_on(self, record, claim: Claim, accepted: Accepted, ran: Separated, started_at: str,
                 events: TaskEvents) -> None:
        """A separated task's stems go to the store stage; the task before it is settled first (one
        task at most waits behind the model)."""
        self._settle_behind(wait=True)
        task_uuid = accepted.task.task_uuid
        behind = Behind(record, claim, accepted, ran, started_at, events, dict(ran.stems))
        if self.storing.busy:
            # The drain window ended while the task before was still being stored: it was left for
            # redelivery, its store still runs, and this task goes the same way (a second job for the
            # stage would be one more than it holds, and there is no time left to store it).
            self._left_unstored(behind)
            self.p.release(claim)
            return

        def store() -> dict[str, str]:
            behind.stems = stem_encoding.encode(behind.stems, accepted.output_format)
            return self.p.storage.put_stems(task_uuid, behind.stems)
        behind.stored = self.storing.start(store)
        self.behind = behind

    def _settle_behind(self, wait: bool) -> None:
        """Commit the task whose stems were being stored, once they are (waiting for them if *wait*,
        through the drain); a store that failed is done again here, with the waits of the sequential
        order."""
        behind = self.behind
        if behind is None or behind.stored is None or (not wait and not behind.stored.done()):
            return
        self.behind = None
        task = behind.accepted.task
        with structlog.contextvars.bound_contextvars(task_uuid=task.task_uuid, topic=behind.record.topic,
                                                     partition=behind.record.partition, offset=behind.record.offset):
            try:
                if not self.runtime.wait(until=behind.stored.done, through_drain=True).done:
                    self._left_unstored(behind)
                    return
                error = behind.stored.exception()
                if error is None:
                    behind.remove_workdir()
                    stored: StoreOutcome = Stored(behind.stored.result())
                else:
                    # The store stage's trouble is not the task's: encoded and stored again here, with
                    # the waits for a failing store of the sequential order.
                    log.warning("stems not stored by the store stage; storing them again", error=str(error))
                    stored = self._store_again(behind)
                outcome = self.p._stored_outcome(behind.accepted, behind.ran, behind.started_at, behind.events, stored)
                if isinstance(outcome, Abandoned):
                    self._abandon(outcome)
                    return
                self.p.settle(behind.record, task, outcome, behind.claim)
            finally:
                self.p.release(behind.claim)

    def _left_unstored(self, behind: Behind) -> None:
        """*behind* is left for redelivery with the drain window over: its stems go, nothing is committed."""
        behind.remove_workdir()
        behind.events.requeued(DRAIN_ENDED_IN_STORE)
        self._abandon(Abandoned(DRAIN_ENDED_IN_STORE))

    def _store_again(self, behind: Behind) -> StoreOutcome:
        task_uuid = behind.accepted.task.task_uuid
        try:
            behind.stems = stem_encoding.encode(behind.stems, behind.accepted.output_format)
        except OSError as e:
            behind.remove_workdir()
            error = f"separation finished but {e}"[:MAX_ERROR_CHARS]
            log.error("stems not encoded", error=error)
            return StoreFailed(error)
        ran = dataclasses.replace(behind.ran, stems=behind.stems)
        return self.p.store(task_uuid, ran, behind.claim)

    def drain(self) -> None:
        """At a stop: the task taken ahead is left for redelivery; the stems already separated are stored
        and committed if the drain window allows."""
        self.separation.forget_ahead()
        if (ahead := self.ahead) is not None:
            self.ahead = None
            ahead.discard(self.p.storage.release_input)
            with structlog.contextvars.bound_contextvars(topic=ahead.record.topic, partition=ahead.record.partition,
                                                         offset=ahead.record.offset):
                self._abandon(Abandoned("stopping: the task taken ahead was not started"))
            self.p.release(ahead.claim)
        self._settle_behind(wait=True)
