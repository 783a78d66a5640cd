"""``uvrd processor``: consume separation tasks, run them, commit one result each.

One task at a time (with ``processor.pipeline``, one task in the model at a time: the next one's
input is fetched and the last one's stems are stored beside it, pipeline.py), in three steps:

- :func:`~uvrd.processor.accept.accept` reads the task message and checks it against this processor's
  configuration (model, output format, storage): a :class:`~uvrd.outcomes.Rejected` or the task;
- :meth:`Processor.process` fetches its input, runs the separation with its retries
  (separation.py, which reports its progress and stops it on a cancellation) and stores the
  stems: Succeeded, Failed, Cancelled or Abandoned;
- :meth:`Processor.settle` commits the result (settlement.py builds it, with the status record and,
  for a failure, a dead-letter copy) together with the task's offset, then removes the input.

A task whose cancellation was requested before it is reached is settled as Cancelled without
running: the whole cancellations topic is read before the first task is taken, and read through
its end again before each task starts, so a request the api acknowledged a moment ago counts.  Nothing is
committed for an Abandoned task (stop deadline, lost partition): it is redelivered to
whichever worker owns the partition next.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import socket
from collections.abc import Callable
from pathlib import Path

import structlog
from kafka import TopicPartition

from uvrd import messages
from uvrd.config import Config
from uvrd.boards import status
from uvrd.boards.cancellations import Cancellations
from uvrd.kafka.commit_mode import next_offset
from uvrd.kafka.bulletin import Bulletin
from uvrd.daemon.consumer_daemon import POLL_MS, Membership
from uvrd.kafka.group_member import Claim, GroupMember
from uvrd.metrics import processor as processor_metrics
from uvrd.outcomes import (Abandoned, Cancelled, Failed, NotCommitted, Rejected, Stored, StoreFailed, StoreOutcome,
                           Succeeded, TaskOutcome)
from uvrd.processor.accept import MAX_ERROR_CHARS, Accepted, accept, rejected
from uvrd.processor.attempts import AttemptLedger
from uvrd.processor.engine import Engine, EngineSettings
from uvrd.processor.engine_protocol import Job, JobCancelled, JobFailed, Separated
from uvrd.processor import decoded_input, device_check, heartbeat
from uvrd.processor.host_trouble import HostTrouble
from uvrd.processor.pipeline import Ahead, FetchedInput
from uvrd.processor.pipeline_turns import PipelineTurns
from uvrd.processor.priority import PriorityChooser
from uvrd.processor.separation import Separation, Watchers
from uvrd.processor.task_events import TaskEvents
from uvrd.processor.settlement import settlement
from uvrd.runtime import drain, logs
from uvrd.runtime.deadline import Deadline
from uvrd.runtime.wait import Runtime
from uvrd.storage import Storage, StorageError, open_storage

log = structlog.get_logger("uvrd.processor")

# READY waits this long at most for the cancellations topic; past it, tasks wait for it instead.
CATCH_UP_S = 30.0
# Before each task, the cancellations topic is read through its end for at most this long; past
# it the task starts, and a request that arrives meanwhile stops it at the engine's next step.
CANCELLATIONS_READ_S = 5.0



class Processor:
    name = "processor"

    def __init__(self, config: Config, environ=None, engine: Callable[[EngineSettings], Engine] = Engine):
        """*engine* makes the engine from its settings: the service tests give one whose child is
        scripted, where the model is not what they test."""
        cfg = self.cfg = config.processor
        self.config = config
        self.membership = Membership.of("processor", cfg, list(config.topics.task_topics()),
                                        cfg.commit == "exactly-once", environ)
        self.engine = engine(_engine_settings(cfg, os.environ if environ is None else environ))
        self.attempts = AttemptLedger(cfg.output_dir / ".attempts")
        self.priorities = PriorityChooser(config.topics.task_topics())
        self.storage = open_storage(config)
        self.cancellations = Cancellations(config.kafka, config.topics.cancellations)
        self.bulletin = Bulletin(config.kafka)
        self.heartbeat = heartbeat.Heartbeat(self.bulletin, config.topics.workers, self.membership.transactional_id,
                                             cfg.heartbeat_interval)
        self.runtime: Runtime | None = None
        self.member: GroupMember | None = None
        self.host: HostTrouble | None = None
        self.separation: Separation | None = None
        # processor.pipeline: the tasks ahead of and behind the model (pipeline_turns.py).
        self.pipeline = PipelineTurns(self)

    # -- the daemon's hooks ---------------------------------------------------------------------
    def start(self, stack: contextlib.ExitStack, runtime: Runtime) -> bool:
        self.runtime = runtime
        self.host = HostTrouble(runtime, self.cfg.job_timeout)
        self.separation = Separation(self.engine, self.cfg, runtime, self.host)
        for d in (self.cfg.model_dir, self.cfg.spool_dir, self.cfg.output_dir):
            d.mkdir(parents=True, exist_ok=True)
        # Closed after the Kafka clients; by then it holds no job worth a goodbye.
        stack.callback(self.engine.close)
        stack.callback(self.cancellations.stop)
        stack.callback(self.bulletin.close)
        stack.callback(self.heartbeat.goodbye)  # before the bulletin closes: it sends what it holds
        self.engine.start()
        return self.separation.await_engine()

    def join(self, member: GroupMember) -> None:
        self.member = self.separation.member = member
        # Read once the broker is known to answer (a reader's first try at an absent broker would hold
        # up a stop), and whole before READY: a task taken earlier could be one already cancelled.
        self.cancellations.start()
        self.runtime.wait(until=lambda: self.cancellations.caught_up, budget=Deadline.after(CATCH_UP_S),
                          through_drain=False)

    def serve(self) -> None:
        """One task at a time: each turn makes sure the engine can take one and the cancellations
        already asked for are known, then polls for the next task and handles it."""
        while self.runtime.turn(through_drain=False) is None:
            self._replace_a_dead_engine()
            if not (self.engine.ready or self.separation.await_engine()):
                continue
            if not self.cancellations.caught_up:
                # No task before the cancellations already asked for are known: one may be for it.
                self.runtime.wait(until=lambda: self.cancellations.caught_up, through_drain=False)
                continue
            if not self.cfg.pipeline:
                if (record := self._poll()) is not None:
                    self.handle(record)
                continue
            self.pipeline.turn()
        if self.cfg.pipeline:
            self.pipeline.drain()

    def activity(self) -> str | None:
        if self.host is not None and self.host.status:
            return self.host.status
        run = self.separation.run if self.separation is not None else None
        if run is not None:
            done = f", {run.progress.fraction:.0%} done" if run.progress is not None else ""
            return f"separating {run.task_uuid} for {run.age():.0f} s{done}"
        if not self.runtime.lifecycle.stopping and not self.engine.ready:
            return f"{'warming up' if self.engine.warming else 'loading'} model {self.cfg.model}"
        if not self.cancellations.caught_up:
            return f"reading the cancellations topic {self.cancellations.topic!r}"
        return None

    def _device(self) -> str:
        """The metrics' device label: where the engine's model really runs (device_check.py)."""
        return "cuda" if device_check.on_gpu(self.engine.load_info.get("execution_provider") or "") else "cpu"

    def idle(self) -> str:
        """STATUS= when idle: the default model and where it really runs (device_check.py)."""
        return f"idle, {self.cfg.model} on {self.engine.load_info.get('execution_provider') or 'an unknown device'}"

    def healthy(self) -> bool:
        engine_ok = self.engine.alive() and self.engine.heartbeat_age() < self.cfg.engine_stall_timeout
        run = self.separation.run
        return engine_ok and (run is None or run.over_time(self.cfg.job_timeout) is None)

    def on_turn(self) -> None:
        if self.member is not None:  # connected: the broker can take a heartbeat
            self.heartbeat.beat(heartbeat.doing(self.engine, self.separation.run, self.host.status,
                                                self.runtime.lifecycle.stopping))

    def ready_fields(self) -> dict:
        return {"transactional_id": self.membership.transactional_id, "model": self.cfg.model,
                "execution_provider": self.engine.load_info.get("execution_provider")}

    def on_assigned(self, assigned) -> None:
        # Nothing is fetched from a new assignment until the next poll's priority choice.
        self.member.consumer.pause(*assigned)
        self.priorities.invalidate()

    def on_revoked(self, revoked) -> None:
        pass

    def on_lost(self, claim: Claim) -> None:
        pass  # the separation sees it on its claim and ends the run

    def _replace_a_dead_engine(self) -> None:
        if not self.engine.alive():
            log.warning("separation engine died while idle; restarting it")
            self.engine.restart("died_while_idle")

    def _poll(self):
        """The next task record, after a poll of up to POLL_MS on the topic the priorities choose; or None."""
        self.priorities.apply(self.member.consumer)
        records = self.member.poll(POLL_MS, max_records=1)
        return records[0] if records else None

    # -- one task: accept, process, settle ------------------------------------------------------
    def handle(self, record) -> None:
        logs.bind_task(topic=record.topic, partition=record.partition, offset=record.offset)
        self.priorities.served(record.topic)
        claim = self.member.claim(TopicPartition(record.topic, record.partition), resume_at=record.offset + 1)
        try:
            accepted = accept(record, self.cfg, self.storage.name)
            if isinstance(accepted, Rejected):
                self.settle(record, None, accepted, claim)
                return
            structlog.contextvars.bind_contextvars(task_uuid=accepted.task.task_uuid)
            if requested_at := self.cancellation_of(accepted.task.task_uuid):
                self.settle(record, accepted.task, Cancelled(requested_at), claim)
                return
            outcome = self.process(accepted, claim)
            assert outcome is not None, "only the pipeline hands a task on"
            if isinstance(outcome, Abandoned):
                log.info("task left uncommitted for redelivery", reason=outcome.reason)
                processor_metrics.settled(outcome)
                return
            self.settle(record, accepted.task, outcome, claim)
        finally:
            self.member.release(claim)
            logs.bind_task()

    def cancellation_of(self, task_uuid: str) -> str | None:
        """When the task's cancellation was requested, if it was, once every request the broker had
        acknowledged until now is read (the view alone trails the topic by up to a poll)."""
        deadline = Deadline.after(CANCELLATIONS_READ_S)
        end = self.cancellations.end_now(deadline)
        if end is None or not self.runtime.wait(until=lambda: self.cancellations.reached(end), budget=deadline,
                                                through_drain=True, turn_ms=50).done:
            log.warning("the cancellations topic could not be read through its end before the task started; "
                        "a request for it still stops it while it runs", topic=self.cancellations.topic)
        return self.cancellations.requested_at(task_uuid)

    def process(self, accepted: Accepted, claim: Claim, ahead: Ahead | None = None) -> TaskOutcome | Rejected | None:
        """Fetch the input (a task naming an input that is not there is rejected), separate it (with
        retries), store the stems.  A task taken *ahead* (the pipeline) has its fetch begun already,
        and its stems are handed to the store stage: None then."""
        task = accepted.task
        audio: Path | Abandoned | BaseException | None = None
        decoded: Path | None = None  # the input's samples, decoded ahead by the pipeline's fetch stage
        if ahead is not None and ahead.fetched is not None:
            fetched = self.pipeline.await_fetch(ahead)
            if isinstance(fetched, FetchedInput):
                audio, decoded = fetched.path, fetched.decoded
            elif isinstance(fetched, StorageError):
                log.warning("input not fetched by the fetch stage; fetching it again", error=str(fetched))
                # audio stays None: fetched again below, with the waits of the sequential order
            else:
                audio = fetched
        try:
            if isinstance(audio, BaseException):
                raise audio
            if audio is None:
                audio = self.host.with_store(task.task_uuid, claim, lambda: self.storage.fetch_input(task))
        except messages.BadMessage as e:
            return rejected(e, task, "bad_input_ref")
        except StorageError as e:
            error = f"could not fetch the task's audio: {e}"[:MAX_ERROR_CHARS]
            log.error("task input not fetched", error=error)
            return Failed(error, cause="input_fetch")
        if isinstance(audio, Abandoned):
            return audio
        processor_metrics.accepted()
        try:
            outcome = self._separate(accepted, audio, claim, None if ahead is None else ahead.record, decoded)
        finally:
            self.storage.release_input(audio)
            decoded_input.remove(decoded)
        if isinstance(outcome, Abandoned):
            self.attempts.undo(task.task_uuid)
        return outcome

    def _separate(self, accepted: Accepted, audio: Path, claim: Claim, pipelined_record=None,
                  decoded: Path | None = None) -> TaskOutcome | None:
        """*pipelined_record*: the record of a task run by the pipeline, whose stems are handed to the
        store stage (None returned) while the next task is taken during the run; *decoded*: its
        input's samples decoded ahead (decoded_input.py)."""
        task, model, fmt, plan = accepted.task, accepted.model, accepted.output_format, accepted.plan
        attempt = self.attempts.start(task.task_uuid)
        if attempt > self.cfg.max_attempts:
            log.error("task keeps killing its worker", attempts=attempt - 1)
            return Failed(f"task abandoned: this host started it {attempt - 1} times and the worker was killed "
                          f"or hung each time before it finished", cause="worker_killed")
        log.info("task started", attempt=attempt, model=plan.label, output_format=fmt, audio_path=str(audio))
        started_at = messages.now_iso()
        progress = functools.partial(status.progress_record, self.config.topics.status, task.task_uuid)
        events = TaskEvents(self.bulletin.send, self.config.topics.events, task)

        def announce() -> None:  # reports, not commits: through the bulletin (bulletin.py says why)
            self.bulletin.send(progress(0.0, "started", worker=socket.gethostname(),
                                        submitted_at=task.submitted_at, started_at=started_at, key=task.key))
            events.started(attempt, socket.gethostname())

        def report(p) -> None:
            self.bulletin.send(progress(p.fraction, p.step))
            events.progress(p)
        watchers = Watchers(announce=announce, report=report,
                            cancelled=lambda: self.cancellations.requested_at(task.task_uuid) is not None,
                            turn=self.pipeline.beside_the_model if pipelined_record is not None else None)
        job = functools.partial(Job, task.task_uuid, str(audio), model, fmt, options=task.options,
                                plan=plan if len(plan.models) > 1 else None, encode_later=pipelined_record is not None,
                                decoded=None if decoded is None else str(decoded))
        ran = self.separation.separate(claim, task.task_uuid, job, watchers)
        match ran:
            case Abandoned(reason=reason):
                events.requeued(reason)
                return ran
            case JobFailed(error=error, cause=cause):
                return Failed(error, started_at, cause)
            case JobCancelled():
                log.info("separation stopped: its cancellation was requested")
                return Cancelled(self.cancellations.requested_at(task.task_uuid) or messages.now_iso(), started_at)
        if pipelined_record is not None:
            self.pipeline.hand_on(pipelined_record, claim, accepted, ran, started_at, events)
            return None
        stored = _store_stems(self.host, self.storage, task.task_uuid, ran, claim)
        return self._stored_outcome(accepted, ran, started_at, events, stored)

    def _stored_outcome(self, accepted: Accepted, ran: Separated, started_at: str, events: TaskEvents,
                        stored: StoreOutcome) -> Succeeded | Failed | Abandoned:
        match stored:
            case Stored(refs=refs):
                processor_metrics.separated(accepted.plan.label, self._device(), ran.seconds, ran.audio_seconds)
                return Succeeded(refs, accepted.plan.label, started_at, ran.seconds)
            case StoreFailed(error=error):
                return Failed(error, started_at, "stems_store")
            case Abandoned(reason=reason) as abandoned:
                events.requeued(reason)
                return abandoned
        raise AssertionError(f"unknown store outcome {stored!r}")

    def store(self, task_uuid: str, ran: Separated, claim: Claim) -> StoreOutcome:
        """*ran*'s stems stored, with the waits for a failing store (host_trouble.py)."""
        return _store_stems(self.host, self.storage, task_uuid, ran, claim)

    def settle(self, record, task: messages.Task | None, outcome: Succeeded | Failed | Cancelled | Rejected,
               claim: Claim) -> None:
        """Commit the outcome's records with the task's offset; then forget the task's attempts and
        remove its input, if the input is the task's own."""
        cancel_requested_at = self.cancellations.requested_at(task.task_uuid) if task is not None else None
        settled = settlement(self.config.topics, record, outcome, task, self.storage.name, cancel_requested_at)
        if isinstance(self.member.commit(list(settled.records), next_offset(record), claim), NotCommitted):
            return  # left for redelivery (group_member.py logged why)
        processor_metrics.settled(outcome)
        if settled.task_uuid:
            self.attempts.clear(settled.task_uuid)
        if (input_of := _input_to_remove(outcome, task)) is not None:
            self.storage.remove_input(input_of)
        if isinstance(outcome, Succeeded):
            fields = {"separation_s": round(outcome.seconds, 3)} if outcome.seconds is not None else {}
            log.info("task succeeded", stems=settled.result["stems"], **fields)
        elif isinstance(outcome, Cancelled):
            log.info("task cancelled", requested_at=outcome.requested_at, started=outcome.started_at is not None)
        else:
            log.info("task failed", error=outcome.error)


def _engine_settings(cfg, environ) -> EngineSettings:
    unit = drain.own_unit() if environ.get("INVOCATION_ID") else None
    return EngineSettings(
        model_dir=str(cfg.model_dir), output_dir=str(cfg.output_dir), models=cfg.models,
        output_format=cfg.output_format, mdx_hop_length=cfg.mdx_hop_length,
        mdx_segment_size=cfg.mdx_segment_size, mdx_batch_size=cfg.mdx_batch_size,
        max_audio_seconds=cfg.max_audio_seconds, max_loaded_models=cfg.max_loaded_models,
        chunk_seconds=cfg.chunk_seconds, chunk_overlap_seconds=cfg.chunk_overlap_seconds,
        device=device_check.expected(cfg.device, unit))


def _store_stems(host: HostTrouble, storage: Storage, task_uuid: str, ran: Separated, claim: Claim) -> StoreOutcome:
    """Stored with the stems' refs; StoreFailed if the store kept failing; Abandoned if a stop or a
    rebalance ended the wait for it.  The work directory is gone afterwards in every case."""
    workdir = Path(next(iter(ran.stems.values()))).parent
    try:
        # Every stem is stored before the success is committed: never a result naming stems
        # that are not there.
        refs = host.with_store(task_uuid, claim, lambda: storage.put_stems(task_uuid, ran.stems))
    except StorageError as e:
        error = f"separation finished but {e}"[:MAX_ERROR_CHARS]
        log.error("stems not stored", error=error)
        return StoreFailed(error)
    else:
        return refs if isinstance(refs, Abandoned) else Stored(refs)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)  # whatever the store did not take


def _input_to_remove(outcome: Succeeded | Failed | Cancelled | Rejected, task: messages.Task | None) -> messages.Task | None:
    """The task's own input once it needs it no more.  A failed or refused task is dead-lettered and
    keeps its input until uploader.spool_retention, so that a replay of it can run."""
    return task if isinstance(outcome, Succeeded | Cancelled) else None
