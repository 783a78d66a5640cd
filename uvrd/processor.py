"""``uvrd processor``: consume separation tasks, run them, commit one result each.

One task at a time.  While a separation runs, the task partitions stay
assigned but paused and the consumer keeps polling, so a job longer than
``max.poll.interval.ms`` costs no rebalance.  A result (plus a dead-letter
copy for a failure) is committed together with the task's offset; nothing is
committed for a job that was abandoned (stop deadline, revoked partition),
so the task is redelivered to whichever worker owns the partition next.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import structlog

from . import messages, status
from .attempts import AttemptLedger
from .config import OUTPUT_FORMATS, Config
from .consumer_daemon import Abandoned, ConsumerDaemon, default_transactional_id
from .delivery import OutRecord, dead_letter, next_offset
from .priority import PriorityChooser
from .engine import Engine, EngineDied, EngineSettings, Job, JobResult
from .storage import StorageError, open_storage

log = structlog.get_logger("uvrd.processor")

ENGINE_WAIT_S = 0.4
JOB_KEEPALIVE_POLL_MS = 10
# The host's trouble (a full output disk, an unreachable store): the first wait before the task's
# step runs again, doubling up to the longest.
HOST_WAIT_S = (2.0, 60.0)
# Deaths of a loading engine in a row before the worker exits and leaves it to systemd.
ENGINE_LOAD_TRIES = 3
MAX_ERROR_CHARS = 1000
T = TypeVar("T")


@dataclass(frozen=True)
class Retry:
    reason: str


class Patience:
    """How long a task has waited for its host (disk, store), and how long its next wait is."""

    def __init__(self, limit: float):
        self.limit, self.waited, self.next = limit, 0.0, HOST_WAIT_S[0]

    def exhausted(self) -> bool:
        return self.waited >= self.limit

    def take(self) -> float:
        wait = self.next
        self.waited, self.next = self.waited + wait, min(wait * 2, HOST_WAIT_S[1])
        return wait


class Processor(ConsumerDaemon):
    name = "processor"

    def __init__(self, config: Config, environ=None):
        environ = os.environ if environ is None else environ
        cfg = config.processor
        super().__init__(
            config, group_id=cfg.group_id, topics=list(config.topics.task_topics()), drain_timeout=cfg.drain_timeout,
            broker_timeout=cfg.broker_timeout, exactly_once=cfg.delivery == "exactly-once",
            transactional_id=cfg.transactional_id or default_transactional_id("processor", environ), environ=environ,
        )
        self.cfg = cfg
        self.engine = Engine(EngineSettings(
            model_dir=str(cfg.model_dir), output_dir=str(cfg.output_dir), models=cfg.models,
            output_format=cfg.output_format, mdx_hop_length=cfg.mdx_hop_length,
            mdx_segment_size=cfg.mdx_segment_size, mdx_batch_size=cfg.mdx_batch_size,
            max_audio_seconds=cfg.max_audio_seconds,
        ))
        self.ledger = AttemptLedger(cfg.output_dir / ".attempts")
        self.priorities = PriorityChooser(config.topics.task_topics())
        self.storage = open_storage(config)
        self.waiting: str | None = None  # STATUS= while a task waits for its host

    # -- ConsumerDaemon hooks ---------------------------------------------------
    def start(self, stack: contextlib.ExitStack) -> bool:
        for d in (self.cfg.model_dir, self.cfg.spool_dir, self.cfg.output_dir):
            d.mkdir(parents=True, exist_ok=True)
        # Closed after the Kafka clients; by then it holds no job worth a goodbye.
        stack.callback(self.engine.close)
        self.engine.start()
        return self._await_engine()

    def before_poll(self) -> bool:
        if not self.engine.alive():
            log.warning("separation engine died while idle; restarting it")
            self.engine.restart()
        if not (self.engine.ready or self._await_engine()):
            return False
        self.priorities.apply(self.consumer)
        return True

    def status(self) -> str:
        if self.waiting:
            return self.waiting
        if self.inflight is None and not self.lifecycle.stopping and not self.engine.ready:
            return f"{'warming up' if self.engine.warming else 'loading'} model {self.cfg.model}"
        return super().status()

    def busy_status(self) -> str:
        return f"separating {self.inflight.task_uuid} for {self.inflight.age():.0f} s"

    def healthy(self) -> bool:
        engine_ok = self.engine.alive() and self.engine.heartbeat_age() < self.cfg.engine_stall_timeout
        job_ok = self.inflight is None or self.inflight.age() < self.cfg.job_timeout
        return engine_ok and job_ok and super().healthy()

    def on_assigned(self, assigned) -> None:
        super().on_assigned(assigned)
        # Nothing is fetched from a new assignment until the next poll's priority choice.
        self.consumer.pause(*assigned)
        self.priorities.invalidate()

    def ready_fields(self) -> dict:
        return {"transactional_id": self.transactional_id, "model": self.cfg.model}

    # -- one task ------------------------------------------------------------
    def handle(self, record) -> None:
        self.priorities.served(record.topic)
        task = None
        try:
            task = messages.parse_task(record.value, record.key)
            structlog.contextvars.bind_contextvars(task_uuid=task.task_uuid)
            model = task.model or self.cfg.model
            if model not in self.cfg.models:
                raise messages.BadMessage(f"unknown model {model!r}; this processor serves "
                                          f"{', '.join(self.cfg.models)}", task.task_uuid, task.hook_url)
            fmt = (task.output_format or self.cfg.output_format).lower()
            if fmt not in OUTPUT_FORMATS:
                raise messages.BadMessage(f"unknown output_format {task.output_format!r}; use one of "
                                          f"{', '.join(OUTPUT_FORMATS)}", task.task_uuid, task.hook_url)
            if task.storage != self.storage.name:
                raise messages.BadMessage(f"the task's audio is in {task.storage} storage, but this processor is "
                                          f"configured for {self.storage.name} storage (storage.backend)",
                                          task.task_uuid, task.hook_url)
            audio = self._with_store(task.task_uuid, lambda: self.storage.fetch_input(task))
        except messages.BadMessage as e:
            if e.task_uuid:
                structlog.contextvars.bind_contextvars(task_uuid=e.task_uuid)
            # The error quotes the offending value, which may be a field of most of a megabyte.
            error = str(e) if len(str(e)) <= MAX_ERROR_CHARS else str(e)[:MAX_ERROR_CHARS] + "... (cut)"
            log.warning("task rejected", error=error)
            # A task of another backend names no input of ours to remove.
            ours = task is not None and task.storage == self.storage.name
            self._finish(record, messages.failure_result(e.task_uuid, e.hook_url, error,
                                                          submitted_at=task and task.submitted_at),
                         error, task if ours else None)
            return
        except StorageError as e:
            error = f"could not fetch the task's audio: {e}"[:MAX_ERROR_CHARS]
            log.error("task input not fetched", error=error)
            self._finish(record, messages.failure_result(task.task_uuid, task.hook_url, error,
                                                          submitted_at=task.submitted_at), error, None)
            return
        if isinstance(audio, Abandoned):
            log.info("task left uncommitted for redelivery", reason=audio.reason)
            return
        try:
            self._run(record, task, audio, model, fmt)
        finally:
            self.storage.release_input(audio)

    def _run(self, record, task: messages.Task, audio: Path, model: str, fmt: str) -> None:
        attempt = self.ledger.start(task.task_uuid)
        if attempt > self.cfg.max_attempts:
            error = (f"task abandoned: this host started it {attempt - 1} times and the worker was killed "
                     f"or hung each time before it finished")
            log.error("task keeps killing its worker", attempts=attempt - 1)
            self._finish(record, messages.failure_result(task.task_uuid, task.hook_url, error,
                                                          submitted_at=task.submitted_at), error, task)
            return
        log.info("task started", attempt=attempt, model=model, output_format=fmt, audio_path=str(audio))
        times = {"submitted_at": task.submitted_at, "started_at": messages.now_iso()}
        announce = functools.partial(self._publish_status, task.task_uuid, "processing",
                                     worker=socket.gethostname(), **times)
        outcome = self._separate(record, task, audio, model, fmt, announce)
        if isinstance(outcome, JobResult) and outcome.ok:
            stored = self._store_stems(task.task_uuid, outcome)
            if isinstance(stored, dict):
                self._finish(record, messages.success_result(task, stored, model, storage=self.storage.name, **times),
                             None, task, separation_s=round(outcome.seconds, 3))
                return
            outcome = stored
        if isinstance(outcome, Abandoned):
            self.ledger.undo(task.task_uuid)
            log.info("task left uncommitted for redelivery", reason=outcome.reason)
            return
        self._finish(record, messages.failure_result(task.task_uuid, task.hook_url, outcome.error, **times),
                     outcome.error, task)

    def _store_stems(self, task_uuid: str, outcome: JobResult) -> dict[str, str] | JobResult | Abandoned:
        """The stored stems' refs; a failed JobResult if the store kept failing; Abandoned if a stop or a
        rebalance ended the wait for it.  The work directory is gone afterwards in every case."""
        workdir = Path(next(iter(outcome.stems.values()))).parent
        try:
            # Every stem is stored before the success is committed: never a result naming stems
            # that are not there.
            return self._with_store(task_uuid, lambda: self.storage.put_stems(task_uuid, outcome.stems))
        except StorageError as e:
            error = f"separation finished but {e}"[:MAX_ERROR_CHARS]
            log.error("stems not stored", error=error)
            return JobResult(ok=False, stems={}, error=error)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)  # whatever the store did not take

    def _publish_status(self, task_uuid: str, state: str, **fields) -> None:
        """Best effort: a status the broker does not take now is overtaken by the result's."""
        try:
            self.delivery.commit([status.record(self.config.topics.status, task_uuid, state, **fields)], {})
        except Exception as e:
            log.warning("could not publish the task's status", state=state, error=str(e) or type(e).__name__)

    def _separate(self, record, task, audio: Path, model: str, fmt: str,
                  announce: Callable[[], None] | None) -> JobResult | Abandoned:
        """Run the separation until it has an outcome; *announce* is called once, when a run has begun."""
        reasons = []
        patience = Patience(self.cfg.job_timeout)
        while len(reasons) <= self.cfg.job_retries:
            if not self.engine.ready and not self._await_engine():
                return Abandoned("stopping while the engine restarted")
            try:
                workdir = Path(tempfile.mkdtemp(prefix=f".work-{task.task_uuid}-", dir=self.cfg.output_dir))
            except OSError as e:
                outcome = JobResult(ok=False, stems={}, error=f"could not make a work directory: {e.strerror}",
                                    no_space=e.errno == errno.ENOSPC)
            else:
                with self.working_on(record, task.task_uuid):
                    outcome = self._run_job(Job(task.task_uuid, str(audio), model, fmt, str(workdir)), announce)
                announce = None
                if isinstance(outcome, JobResult) and outcome.ok:
                    return outcome
                shutil.rmtree(workdir, ignore_errors=True)
            if isinstance(outcome, JobResult) and outcome.no_space:
                # This host's disk, not the task: wait for space (retention, an operator) and run it
                # again, for as long as a job may take.
                if patience.exhausted():
                    return JobResult(ok=False, stems={}, error=f"the output disk stayed full for over "
                                                               f"{self.cfg.job_timeout:g} s: {outcome.error}")
                gave_up = self._wait_for_host(
                    patience, "output disk full; the task runs again once there is space", outcome.error,
                    f"output disk full: task {task.task_uuid} waits for space to run again", "the output disk was full")
                if gave_up is not None:
                    return gave_up
                continue
            if not isinstance(outcome, Retry):
                return outcome
            reasons.append(outcome.reason)
            log.warning("separation run did not finish; retrying", reason=outcome.reason, runs=len(reasons))
        return JobResult(ok=False, stems={}, error=f"separation did not finish in {len(reasons)} runs: "
                                                   f"{'; '.join(reasons)}")

    def _wait_for_host(self, patience: Patience, event: str, error: str, status: str,
                       trouble: str) -> Abandoned | None:
        """Wait out the host's *trouble* for *patience*'s next wait: *event* in the journal, *status* to
        systemd, the group membership kept; an Abandoned if a stop or a rebalance ends the wait."""
        seconds = patience.take()
        log.error(event, error=error, retry_in_s=seconds)
        self.waiting = status
        try:
            if not self.pause_for(seconds, drain=False):
                return Abandoned(f"stopping while {trouble}")
        finally:
            self.waiting = None
        if self.taken.lost:
            return Abandoned("the partition was reassigned to another worker")
        return None

    def _with_store(self, task_uuid: str, step: Callable[[], T]) -> T | Abandoned:
        """*step()*, run again while the store fails (unreachable, refusing, broken off).

        That is the deployment's trouble, not the task's: the task waits, uncommitted and with the
        group membership kept, for as long as a job may take (job_timeout); only then does the
        StorageError go to the caller, which fails the task.
        """
        patience = Patience(self.cfg.job_timeout)
        while True:
            try:
                return step()
            except StorageError as e:
                if patience.exhausted():
                    raise StorageError(f"{e} (the store kept failing for over {self.cfg.job_timeout:g} s)") from None
                gave_up = self._wait_for_host(patience, "storage failed; the task waits and tries again", str(e),
                                              f"storage failed: task {task_uuid} waits to try again",
                                              "the store was failing")
                if gave_up is not None:
                    return gave_up

    def _run_job(self, job: Job, announce: Callable[[], None] | None) -> JobResult | Abandoned | Retry:
        try:
            self.engine.submit(job)
        except OSError:
            self.engine.restart()
            return Retry("separation engine was gone when the job was submitted")
        if announce is not None:
            # While the child separates: the status's round trips to the broker then cost no time.
            announce()
        while True:
            self.tick()
            if self.lifecycle.must_abandon():
                self.engine.kill()
                return Abandoned("second stop signal" if self.lifecycle.quick else
                                 "the drain window ended before the separation did")
            if self.inflight.lost:
                self.engine.restart()
                return Abandoned("the partition was reassigned to another worker")
            if self.inflight.age() > self.cfg.job_timeout:
                self.engine.restart()
                return Retry(f"separation exceeded job_timeout ({self.cfg.job_timeout:g} s)")
            try:
                result = self.engine.poll_result(ENGINE_WAIT_S)
            except EngineDied as e:
                self.engine.restart()
                return Retry(str(e))
            if result is not None:
                return result
            # Short: a result that comes while the consumer polls waits for the poll to end.
            self.keep_membership(JOB_KEEPALIVE_POLL_MS)

    def _finish(self, record, result: dict, error: str | None, input_of: messages.Task | None,
                **log_fields) -> None:
        """Commit the result (plus status and, for a failure, a dead-letter copy) with the offset;
        then remove *input_of*'s input, if it is the task's own."""
        task_uuid = result["task_uuid"]
        key = task_uuid.encode() if task_uuid else record.key
        out = [OutRecord(self.config.topics.results, key, messages.encode(result))]
        if task_uuid:
            state = "succeeded" if result["success"] else "failed"
            fields = {k: result.get(k) for k in ("submitted_at", "started_at", "finished_at", "error_message",
                                                 "stems", "storage")}
            out.append(status.record(self.config.topics.status, task_uuid, state, **fields))
        if error is not None:
            out.append(dead_letter(self.config.topics.dead_letter, record, error, "processor"))
        if not self.commit(out, next_offset(record)):
            return
        if task_uuid:
            self.ledger.clear(task_uuid)
        if input_of is not None:
            self.storage.remove_input(input_of)
        if result["success"]:
            log.info("task succeeded", stems=result["stems"], **log_fields)
        else:
            log.info("task failed", error=result["error_message"])

    # -- engine and group membership ---------------------------------------
    def _await_engine(self) -> bool:
        """Wait for the engine's model to load and warm up; False if a stop came first.

        A child that dies while loading is replaced a few times before the
        worker gives up: one lost child (the OOM killer, a GPU reset) should not
        cost the whole worker its group membership.
        """
        deadline = time.monotonic() + self.cfg.engine_start_timeout
        deaths = 0
        while True:
            try:
                if self.engine.poll_ready(ENGINE_WAIT_S):
                    return True
            except EngineDied as e:
                deaths += 1
                if e.fatal_config or deaths >= ENGINE_LOAD_TRIES:
                    raise
                log.warning("separation engine died while loading the model; restarting it", reason=str(e))
                self.engine.restart()
            self.tick()
            if self.lifecycle.stopping:
                return False
            if time.monotonic() > deadline:
                raise EngineDied(f"model did not load within engine_start_timeout "
                                 f"({self.cfg.engine_start_timeout:g} s)")
            if self.consumer is not None:
                self.keep_membership()
