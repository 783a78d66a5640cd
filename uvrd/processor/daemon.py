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

With ``processor.fair_share``, the next task is not the next offset: the processor reads ahead up to
``fair_share_window`` records of each priority (read_ahead.py) and runs the API keys' tasks in turns
(key_turns.py).  A task then may end above one still running: its result still goes out in its own
transaction, with the offset of the lowest task not yet ended, and a task redelivered after it ended
(its status says so, boards/ended_tasks.py) is settled without running or a second result.
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
from uvrd.boards.ended_tasks import EndedTasks, Prior
from uvrd.kafka.commit_mode import Landed, Offsets, Unanswered, next_offset
from uvrd.kafka.bulletin import Bulletin
from uvrd.daemon.consumer_daemon import POLL_MS, Membership
from uvrd.kafka.group_member import Claim, GroupMember
from uvrd.kafka.partition_ends import PartitionEnds
from uvrd.metrics import processor as processor_metrics
from uvrd.outcomes import (Abandoned, Cancelled, Committed, Failed, NotCommitted, Rejected, Stored, StoreFailed, StoreOutcome,
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
from uvrd.processor.read_ahead import ReadAhead
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
# With fair share, before each task the status topic is read through its end for at most this long;
# past it the task waits for its next turn: running it could give a task that ended a second result.
STATUS_READ_S = 5.0



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
        # processor.fair_share: the records read ahead, the tasks that ended (read_ahead.py says why),
        # and the partitions' ends, asked beside the member's consumer (partition_ends.py says why).
        self.read_ahead = ReadAhead(config.topics.task_topics(), cfg.fair_share_window) if cfg.fair_share else None
        self.ended = EndedTasks(config.kafka, config.topics.status) if cfg.fair_share else None
        self.partition_ends = PartitionEnds(config.kafka) if cfg.fair_share else None
        self._status_ends: dict[TopicPartition, dict[int, int] | None] = {}
        self.priorities = PriorityChooser(config.topics.task_topics(),
                                          None if self.partition_ends is None else self.partition_ends.now)
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
        if self.ended is not None:
            stack.callback(self.ended.stop)
        if self.partition_ends is not None:
            stack.callback(self.partition_ends.close)
        stack.callback(self.bulletin.close)
        stack.callback(self.heartbeat.goodbye)  # before the bulletin closes: it sends what it holds
        self.engine.start()
        return self.separation.await_engine()

    def join(self, member: GroupMember) -> None:
        self.member = self.separation.member = member
        # Read once the broker is known to answer (a reader's first try at an absent broker would hold
        # up a stop), and whole before READY: a task taken earlier could be one already cancelled.
        self.cancellations.start()
        if self.ended is not None:
            self.ended.start()
        self.runtime.wait(until=self._boards_caught_up, budget=Deadline.after(CATCH_UP_S), through_drain=False)

    def _boards_caught_up(self) -> bool:
        """The cancellations (and, with fair share, the tasks that ended) already recorded are read."""
        return self.cancellations.caught_up and (self.ended is None or self.ended.caught_up)

    def serve(self) -> None:
        """One task at a time: each turn makes sure the engine can take one and the cancellations
        already asked for are known, then polls for the next task and handles it."""
        while self.runtime.turn(through_drain=False) is None:
            self._replace_a_dead_engine()
            if not (self.engine.ready or self.separation.await_engine()):
                continue
            if not self._boards_caught_up():
                # No task before the cancellations already asked for are known: one may be for it
                # (and with fair share, the tasks that ended: one may be redelivered).
                self.runtime.wait(until=self._boards_caught_up, through_drain=False)
                continue
            if not self.cfg.pipeline:
                if (record := self.next_record()) is not None:
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
        if self.ended is not None and not self.ended.caught_up:
            return f"reading the status topic {self.ended.topic!r}"
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
        # The separation sees it on its claim and ends the run; the records read ahead are the next owner's.
        if self.read_ahead is not None and (dropped := self.read_ahead.lost(claim)):
            log.info("partition moved to another worker: its tasks read ahead are left to it",
                     partition=f"{claim.tp.topic}/{claim.tp.partition}", dropped=dropped)

    def _replace_a_dead_engine(self) -> None:
        if not self.engine.alive():
            log.warning("separation engine died while idle; restarting it")
            self.engine.restart("died_while_idle")

    def next_record(self, timeout_ms: int = POLL_MS):
        """The next task record, after a poll of up to *timeout_ms* on the topic the priorities choose;
        or None.  With fair share, the poll tops up what is read ahead, and the record is the next
        one of the key whose turn it is (read_ahead.py)."""
        consumer = self.member.consumer
        if self.read_ahead is None:
            self.priorities.apply(consumer)
            records = self.member.poll(timeout_ms, max_records=1)
            return records[0] if records else None
        window = self.read_ahead
        level = self.priorities.apply(consumer, window.held_by_topic())
        room = window.room(level) if level is not None else window.limit
        if room > 0:
            # No wait while a task of the level may run now: the poll only tops up.
            wait = 0 if level is not None and window.runnable(level) else timeout_ms
            records = self.member.poll(wait, max_records=room)
            assert self.partition_ends is not None and self.ended is not None
            if unread := window.unread(records):
                ends = self.partition_ends.now(unread)
                # What a task of these partitions that ended before is checked against: every status
                # record committed until now (its owner then committed nothing after this member got
                # the partition).  None if the broker did not say: each task then reads to the end.
                status_end = self.ended.end_now(Deadline.after(STATUS_READ_S))
                self._status_ends.update({tp: status_end for tp in unread})
            else:
                ends = {}
            for record in records:
                if not window.add(record, self.member, ends):
                    consumer.seek(TopicPartition(record.topic, record.partition), record.offset)
        else:
            self.member.keep(0)  # the level's window is full: a poll for the membership only
        if level is None and any(window.held(lv) for lv in set(self.priorities.topics.values())):
            # Nothing waited when the backlog was read (or nothing was assigned yet): choose among what
            # came, as the priorities would have, so that the pick is counted against the levels it
            # passes over (an idle processor's first poll takes records of every level at once).
            level = self.priorities.apply(consumer, window.held_by_topic())
        return window.pick(level) if level is not None else None

    def claim(self, record) -> Claim:
        """The claim *record*'s work runs under: with fair share its partition's, held as long as the
        partition is ours (read_ahead.py); else one of its own, released once it is settled."""
        if self.read_ahead is not None:
            return self.read_ahead.claim_of(record)
        return self.member.claim(TopicPartition(record.topic, record.partition), resume_at=record.offset + 1)

    def release(self, claim: Claim) -> None:
        if self.read_ahead is None or not self.read_ahead.owns(claim):
            self.member.release(claim)

    def put_back(self, record) -> None:
        """*record*'s task was left uncommitted while its partition stays ours: with fair share it waits
        for its turn again (the consumer's position is past it already)."""
        if self.read_ahead is not None:
            self.read_ahead.put_back(record)

    # -- one task: accept, process, settle ------------------------------------------------------
    def handle(self, record) -> None:
        logs.bind_task(topic=record.topic, partition=record.partition, offset=record.offset)
        self.priorities.served(record.topic)
        claim = self.claim(record)
        try:
            accepted = accept(record, self.cfg, self.storage.name)
            if isinstance(accepted, Rejected):
                if not self.ended_before(record, accepted.task_uuid, accepted.replay, claim):
                    self.settle(record, None, accepted, claim)
                return
            structlog.contextvars.bind_contextvars(task_uuid=accepted.task.task_uuid)
            if self.ended_before(record, accepted.task.task_uuid, accepted.task.replay, claim):
                return
            if requested_at := self.cancellation_of(accepted.task.task_uuid):
                self.settle(record, accepted.task, Cancelled(requested_at), claim)
                return
            outcome = self.process(accepted, claim)
            assert outcome is not None, "only the pipeline hands a task on"
            if isinstance(outcome, Abandoned):
                log.info("task left uncommitted for redelivery", reason=outcome.reason)
                processor_metrics.settled(outcome)
                self.put_back(record)
                return
            self.settle(record, accepted.task, outcome, claim)
        finally:
            self.release(claim)
            logs.bind_task()

    def ended_before(self, record, task_uuid: str | None, replay: int, claim: Claim) -> bool:
        """With fair share: whether the task is not to run (or be rejected) now, because it ended before
        (redelivered after it finished above a task still running, or a copy of a task that ended: its
        offset is committed alone, no second result), or because the status topic could not be read to
        say (it waits for its next turn).  A message that names no task runs in offset order (read_ahead.py)."""
        if self.ended is None or task_uuid is None or \
                (self.read_ahead is not None and not self.read_ahead.may_have_ended(record)):
            return False
        status_end = self._status_ends.get(TopicPartition(record.topic, record.partition))
        prior = self.ended.prior(task_uuid, replay, self._status_read_through_end(status_end))
        if prior is Prior.NOT_ENDED:
            return False
        if prior is Prior.UNKNOWN:
            log.warning("the status topic could not be read through its end; the task waits for its next turn",
                        topic=self.ended.topic)
            self.put_back(record)
            return True
        log.info("task redelivered after it ended; settled without running it again")
        assert self.read_ahead is not None, "fair share reads ahead"
        if isinstance(self.member.commit([], self.read_ahead.offsets_with(record), claim), Committed):
            self.read_ahead.settled(record)
        return True

    def _status_read_through_end(self, end: dict[int, int] | None = None) -> bool:
        """Whether every status record the broker had committed until now (or before *end*, an end the
        status topic had) is read, within STATUS_READ_S: after the first task of a partition's, the
        board has read that far, and the next ones wait for nothing."""
        assert self.ended is not None
        deadline = Deadline.after(STATUS_READ_S)
        if end is None:
            end = self.ended.end_now(deadline)
        return end is not None and self.runtime.wait(until=lambda: self.ended is not None and self.ended.reached(end),
                                                     budget=deadline, through_drain=True, turn_ms=50).done

    def _landed_by_status(self, task_uuid: str, replay: int) -> Landed:
        """For a commit whose offset does not move (fair share): whether its try left unsure landed,
        told by the task's ended status, committed in the same transaction as its result."""
        def landed() -> bool:
            assert self.ended is not None
            prior = self.ended.prior(task_uuid, replay, self._status_read_through_end())
            if prior is Prior.UNKNOWN:
                raise Unanswered("the status topic could not be read through its end")  # tried again later
            return prior is Prior.ENDED
        return landed

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
        task, fmt, plan = accepted.task, accepted.output_format, accepted.plan
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
        job = self.job_for(accepted, audio, decoded, pipelined=pipelined_record is not None)
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

    def job_for(self, accepted: Accepted, audio: Path, decoded: Path | None, pipelined: bool) -> Callable[[str], Job]:
        """The engine's job for *accepted*'s input *audio*, given its work directory; *decoded*: its
        samples decoded ahead; *pipelined*: its stems are encoded by the store stage."""
        task, plan = accepted.task, accepted.plan
        return functools.partial(Job, task.task_uuid, str(audio), accepted.model, accepted.output_format,
                                 options=task.options, plan=plan if len(plan.models) > 1 else None,
                                 encode_later=pipelined, decoded=None if decoded is None else str(decoded))

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
        offsets: Offsets = next_offset(record) if self.read_ahead is None else self.read_ahead.offsets_with(record)
        landed = None
        if self.ended is not None and settled.task_uuid:
            replay = task.replay if task is not None else outcome.replay if isinstance(outcome, Rejected) else 0
            landed = self._landed_by_status(settled.task_uuid, replay)
        if isinstance(self.member.commit(list(settled.records), offsets, claim, landed), NotCommitted):
            self.put_back(record)
            return  # left for redelivery (group_member.py logged why)
        if self.read_ahead is not None:
            self.read_ahead.settled(record)
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
