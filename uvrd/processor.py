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
import os
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import kafka.errors as Errors
import structlog
from kafka import ConsumerRebalanceListener, TopicPartition

from . import drain, kafka_io, logs, messages, spool
from .attempts import AttemptLedger
from .config import OUTPUT_FORMATS, Config
from .delivery import AtLeastOnce, CommitLost, ExactlyOnce, OutRecord, next_offset
from .engine import Engine, EngineDied, EngineSettings, Job, JobResult
from .lifecycle import Lifecycle
from .notify import Notifier

log = structlog.get_logger("uvrd.processor")

POLL_MS = 200  # bounds how long an idle worker takes to notice a stop
KEEPALIVE_POLL_MS = 100  # polls while a job runs: membership only, partitions paused
ENGINE_WAIT_S = 0.4
CLOSE_TIMEOUT_S = 5.0


@dataclass
class InFlight:
    tp: TopicPartition
    offset: int
    task_uuid: str
    started: float = field(default_factory=time.monotonic)
    revoked: bool = False  # revoked by a rebalance that has not finished yet
    lost: bool = False     # the rebalance gave the partition to another member

    def age(self) -> float:
        return time.monotonic() - self.started


@dataclass(frozen=True)
class Abandoned:
    reason: str


@dataclass(frozen=True)
class Retry:
    reason: str


def default_transactional_id(environ) -> str:
    """Stable per unit, so a restarted worker fences the zombie of its previous run."""
    unit = drain.own_unit() if environ.get("INVOCATION_ID") else None
    where = unit.removesuffix(".service") if unit else f"pid{os.getpid()}"
    return f"uvrd-processor-{socket.gethostname()}-{where}"


class Processor:
    def __init__(self, config: Config, environ=None):
        environ = os.environ if environ is None else environ
        self.config = config
        self.cfg = config.processor
        self.notifier = Notifier()
        self.lifecycle = Lifecycle(self.notifier, drain.drain_window(self.cfg.drain_timeout, environ))
        self.engine = Engine(EngineSettings(
            model_dir=str(self.cfg.model_dir), output_dir=str(self.cfg.output_dir), models=self.cfg.models,
            output_format=self.cfg.output_format, mdx_hop_length=self.cfg.mdx_hop_length,
            mdx_segment_size=self.cfg.mdx_segment_size, mdx_batch_size=self.cfg.mdx_batch_size,
        ))
        self.ledger = AttemptLedger(self.cfg.output_dir / ".attempts")
        self.transactional_id = self.cfg.transactional_id or default_transactional_id(environ)
        self.consumer = None
        self.delivery = None
        self.inflight: InFlight | None = None
        self._ready = False
        self._connected_at = 0.0

    # -- run -----------------------------------------------------------
    def run(self) -> int:
        with contextlib.ExitStack() as stack:
            stack.enter_context(self.lifecycle.signals_installed())
            for d in (self.cfg.model_dir, self.cfg.spool_dir, self.cfg.output_dir):
                d.mkdir(parents=True, exist_ok=True)
            # Closed in reverse: consumer (leaves the group, so its partitions
            # move at once), then producer, then the engine, which by then
            # holds no job and nothing worth a polite goodbye.
            stack.callback(self.engine.kill)
            self.engine.start()
            if not self._await_engine():
                return 0
            if not self._connect(stack):
                return 0
            self._ready = True
            self.notifier.ready("idle")
            log.info("processor ready", delivery=self.delivery.mode, topic=self.config.topics.tasks,
                     group_id=self.cfg.group_id, transactional_id=self.transactional_id,
                     drain_window_s=round(self.lifecycle.drain_window, 1))
            self._loop()
            log.info("processor stopping: closing consumer, producer and engine")
        log.info("processor stopped")
        return 0

    def _connect(self, stack: contextlib.ExitStack) -> bool:
        """Connect to Kafka, retrying until it answers or a stop is requested."""
        backoff = 0.5
        while True:
            consumer = None
            try:
                consumer = kafka_io.consumer(self.config.kafka, self.cfg.group_id)
                consumer.subscribe([self.config.topics.tasks], listener=_Rebalance(self))
                delivery = (ExactlyOnce if self.exactly_once else AtLeastOnce)(self._make_producer, consumer)
                delivery.open()
            except Errors.KafkaError as e:
                if consumer is not None:
                    consumer.close(autocommit=False, timeout_ms=1000)
                log.warning("broker not reachable, retrying", bootstrap_servers=self.config.kafka.bootstrap_servers,
                            error=str(e) or type(e).__name__, retry_in_s=backoff)
                if not self._pause_for(backoff, drain=False):
                    return False
                backoff = min(backoff * 2, 10.0)
                continue
            self.consumer, self.delivery = consumer, delivery
            self._connected_at = time.monotonic()
            stack.callback(self.delivery.close, CLOSE_TIMEOUT_S)
            stack.callback(self.consumer.close, autocommit=False, timeout_ms=int(CLOSE_TIMEOUT_S * 1000))
            return True

    @property
    def exactly_once(self) -> bool:
        return self.cfg.delivery == "exactly-once"

    def _make_producer(self):
        return kafka_io.producer(self.config.kafka, self.transactional_id if self.exactly_once else None)

    def _loop(self) -> None:
        while True:
            self._tick()
            if self.lifecycle.stopping:
                return
            if not self.engine.alive():
                log.warning("separation engine died while idle; restarting it")
                self.engine.restart()
            if not self.engine.ready and not self._await_engine():
                return
            records = self.consumer.poll(timeout_ms=POLL_MS, max_records=1)
            for batch in records.values():
                for record in batch:
                    self._handle(record)
                    logs.bind_task()

    # -- health and status -------------------------------------------------
    def _tick(self) -> None:
        self.lifecycle.tick(self._status(), self._healthy)

    def _status(self) -> str:
        if self.inflight is not None:
            doing = f"separating {self.inflight.task_uuid} for {self.inflight.age():.0f} s"
            if self.lifecycle.stopping:
                return f"draining: {doing}, {self.lifecycle.drain_left():.0f} s left"
            return doing
        if self.lifecycle.stopping:
            return "stopping"
        if not self.engine.ready:
            return f"loading model {self.cfg.model}"
        if self.consumer is None:
            return "waiting for the broker"
        return "idle"

    def _healthy(self) -> bool:
        if not self._ready:
            return False
        engine_ok = self.engine.alive() and self.engine.heartbeat_age() < self.cfg.engine_stall_timeout
        job_ok = self.inflight is None or self.inflight.age() < self.cfg.job_timeout
        return engine_ok and job_ok and self._broker_silence() < self.cfg.broker_timeout

    def _broker_silence(self) -> float:
        """Seconds since the group coordinator last answered a heartbeat.

        kafka-python's public metric counts heartbeats *sent*, which go on
        while the broker is silent; the answer time is what shows the broker
        is reachable.
        """
        heartbeat = getattr(getattr(self.consumer, "_coordinator", None), "heartbeat", None)
        answered = getattr(heartbeat, "last_receive", float("-inf"))
        return time.monotonic() - max(answered, self._connected_at)

    def _pause_for(self, seconds: float, drain: bool) -> bool:
        """Wait while ticking; False once a stop ends the wait (at the drain deadline if *drain*)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self._tick()
            if self.lifecycle.must_abandon() or (self.lifecycle.stopping and not drain):
                return False
            if self.consumer is not None:
                self._keep_membership()
            else:
                time.sleep(min(0.2, max(0.0, end - time.monotonic())))
        return True

    # -- one task ------------------------------------------------------------
    def _handle(self, record) -> None:
        if self.lifecycle.stopping:
            return  # not committed: redelivered to whoever owns the partition next
        logs.bind_task(topic=record.topic, partition=record.partition, offset=record.offset)
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
            audio = spool.resolve_input(self.cfg.spool_dir, task.audio_path, task.task_uuid, task.hook_url)
        except messages.BadMessage as e:
            if e.task_uuid:
                structlog.contextvars.bind_contextvars(task_uuid=e.task_uuid)
            log.warning("task rejected", error=str(e))
            self._finish(record, messages.failure_result(e.task_uuid, e.hook_url, str(e)), str(e),
                         task.audio_path if task else None)
            return

        attempt = self.ledger.start(task.task_uuid)
        if attempt > self.cfg.max_attempts:
            error = (f"task abandoned: this host started it {attempt - 1} times and the worker was killed "
                     f"or hung each time before it finished")
            log.error("task keeps killing its worker", attempts=attempt - 1)
            self._finish(record, messages.failure_result(task.task_uuid, task.hook_url, error), error, str(audio))
            return
        log.info("task started", attempt=attempt, model=model, output_format=fmt, audio_path=str(audio))
        outcome = self._separate(record, task, audio, model, fmt)
        if isinstance(outcome, Abandoned):
            self.ledger.undo(task.task_uuid)
            log.info("task left uncommitted for redelivery", reason=outcome.reason)
        elif outcome.ok:
            stems = self._publish_stems(task.task_uuid, outcome.stems)
            self._finish(record, messages.success_result(task, stems, model), None, str(audio))
        else:
            self._finish(record, messages.failure_result(task.task_uuid, task.hook_url, outcome.error),
                         outcome.error, str(audio))

    def _separate(self, record, task, audio: Path, model: str, fmt: str) -> JobResult | Abandoned:
        reasons = []
        for _ in range(self.cfg.job_retries + 1):
            if not self.engine.ready and not self._await_engine():
                return Abandoned("stopping while the engine restarted")
            workdir = Path(tempfile.mkdtemp(prefix=f".work-{task.task_uuid}-", dir=self.cfg.output_dir))
            self.inflight = InFlight(TopicPartition(record.topic, record.partition), record.offset, task.task_uuid)
            self.consumer.pause(*self.consumer.assignment())
            try:
                outcome = self._run_job(Job(task.task_uuid, str(audio), model, fmt, str(workdir)))
            finally:
                self.inflight = None
                self.consumer.resume(*self.consumer.paused())
            if isinstance(outcome, JobResult) and outcome.ok:
                return outcome
            shutil.rmtree(workdir, ignore_errors=True)
            if not isinstance(outcome, Retry):
                return outcome
            reasons.append(outcome.reason)
            log.warning("separation run did not finish; retrying", reason=outcome.reason, runs=len(reasons))
        return JobResult(ok=False, stems={}, error=f"separation did not finish in {len(reasons)} runs: "
                                                   f"{'; '.join(reasons)}")

    def _run_job(self, job: Job) -> JobResult | Abandoned | Retry:
        try:
            self.engine.submit(job)
        except OSError:
            self.engine.restart()
            return Retry("separation engine was gone when the job was submitted")
        while True:
            self._tick()
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
            self._keep_membership()

    def _publish_stems(self, task_uuid: str, stems: dict[str, str]) -> dict[str, str]:
        """Move a finished job's files to output_dir/<task_uuid>/ (replacing an earlier run's)."""
        final = self.cfg.output_dir / task_uuid
        workdir = Path(next(iter(stems.values()))).parent
        if final.exists():
            shutil.rmtree(final)
        workdir.rename(final)
        return {name: str(final / Path(path).name) for name, path in stems.items()}

    def _finish(self, record, result: dict, dead_letter: str | None, input_path: str | None) -> None:
        task_uuid = result["task_uuid"]
        key = task_uuid.encode() if task_uuid else record.key
        out = [OutRecord(self.config.topics.results, key, messages.encode(result))]
        if dead_letter is not None:
            out.append(OutRecord(self.config.topics.dead_letter, record.key, record.value or b"", (
                ("uvrd-error", dead_letter.encode()),
                ("uvrd-source", f"{record.topic}/{record.partition}/{record.offset}".encode()),
                ("uvrd-stage", b"processor"),
            )))
        if not self._commit(out, next_offset(record)):
            return
        if task_uuid:
            self.ledger.clear(task_uuid)
        if input_path:
            spool.remove_input(self.cfg.spool_dir, input_path)
        if result["success"]:
            log.info("task succeeded", stems=result["stems"])
        else:
            log.info("task failed", error=result["error_message"])

    def _commit(self, out: list[OutRecord], offsets) -> bool:
        backoff = 0.5
        while True:
            try:
                self.delivery.commit(out, offsets)
                return True
            except CommitLost as e:
                log.warning("partition lost before the commit; another worker redoes the task", error=str(e))
                return False
            except Errors.KafkaError as e:
                log.warning("commit failed, retrying", error=str(e) or type(e).__name__, retry_in_s=backoff)
                if not self._pause_for(backoff, drain=True):
                    log.warning("stop deadline reached before the commit succeeded; task left for redelivery")
                    return False
                backoff = min(backoff * 2, 10.0)

    # -- engine and group membership ---------------------------------------
    def _await_engine(self) -> bool:
        """Wait for the engine's model to load; False if a stop came first."""
        deadline = time.monotonic() + self.cfg.engine_start_timeout
        while not self.engine.poll_ready(ENGINE_WAIT_S):
            self._tick()
            if self.lifecycle.stopping:
                return False
            if time.monotonic() > deadline:
                raise EngineDied(f"model did not load within engine_start_timeout "
                                 f"({self.cfg.engine_start_timeout:g} s)")
            if self.consumer is not None:
                self._keep_membership()
        return True

    def _keep_membership(self) -> None:
        """Poll with every partition paused: heartbeats and rebalances proceed, no records come."""
        self.consumer.pause(*self.consumer.assignment())
        try:
            records = self.consumer.poll(timeout_ms=KEEPALIVE_POLL_MS)
        finally:
            if self.inflight is None:
                self.consumer.resume(*self.consumer.paused())
        for tp, batch in records.items():
            # Cannot happen with every partition paused; if it does, rewind so nothing is skipped.
            self.consumer.seek(tp, batch[0].offset)

    def on_revoked(self, revoked) -> None:
        log.info("partitions revoked", partitions=sorted(f"{tp.topic}/{tp.partition}" for tp in revoked))
        if self.inflight is not None and self.inflight.tp in revoked:
            self.inflight.revoked = True

    def on_assigned(self, assigned) -> None:
        log.info("partitions assigned", partitions=sorted(f"{tp.topic}/{tp.partition}" for tp in assigned))
        inflight = self.inflight
        if inflight is None:
            return
        self.consumer.pause(*assigned)
        if inflight.revoked:
            if inflight.tp in assigned:
                # Ours again: the job goes on; skip past it, the commit will cover it.
                self.consumer.seek(inflight.tp, inflight.offset + 1)
                inflight.revoked = False
            else:
                inflight.lost = True


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, processor: Processor):
        self.processor = processor

    def on_partitions_revoked(self, revoked):
        self.processor.on_revoked(revoked)

    def on_partitions_assigned(self, assigned):
        self.processor.on_assigned(assigned)
