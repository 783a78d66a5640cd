"""A task's separation in the engine child: its runs, their retries, and the waits around them.

A run that does not finish (the engine died, or hung past ``job_timeout``) runs again, up to
``job_retries`` more times; a full output disk is the host's trouble and is waited out
(host_trouble.py).  While a run goes on, every partition stays paused and the consumer keeps
polling, so a job longer than ``max.poll.interval.ms`` costs no rebalance; a stop past the drain
window, a second signal or a lost partition ends it with SIGKILL.  A cancellation asks the child to
stop the job at its next step, so the model stays loaded; only a child that does not stop within
CANCEL_GRACE_S is killed.  The child's progress is reported at most every ``progress_interval``.
"""

from __future__ import annotations

import dataclasses
import errno
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from uvrd.config import ProcessorConfig
from uvrd.kafka.group_member import Claim, GroupMember
from uvrd.outcomes import Abandoned, Retry
from uvrd.processor.engine import Engine, EngineDied
from uvrd.processor.engine_protocol import Job, JobCancelled, JobFailed, JobOutcome, NoSpace, Progress, Separated
from uvrd.processor.host_trouble import HostTrouble
from uvrd.runtime.deadline import Deadline
from uvrd.runtime.wait import KEEPALIVE_POLL_MS, Runtime

log = structlog.get_logger("uvrd.processor")

ENGINE_WAIT_S = 0.4
JOB_KEEPALIVE_POLL_MS = 10  # short: a result that comes while the consumer polls waits for the poll
# Deaths of a loading engine in a row before the worker exits and leaves it to systemd.
ENGINE_LOAD_TRIES = 3
# A child asked to stop a job answers at its next step (a chunk: well under a second on a GPU);
# one that has not within this long is killed, and the next task waits for a fresh one.
CANCEL_GRACE_S = 15.0


@dataclass
class Run:
    """The run in the engine now: STATUS= and the watchdog read it."""

    task_uuid: str
    started: float = field(default_factory=time.monotonic)
    progress: Progress | None = None  # the child's latest
    reported: Progress | None = None
    reported_at: float = float("-inf")
    cancel_asked: float | None = None  # when the child was asked to stop the job
    child_stuck: bool = False  # it did not stop the cancelled job within CANCEL_GRACE_S

    def age(self) -> float:
        return time.monotonic() - self.started

    def cancel_overdue(self) -> bool:
        """Whether the child was asked to stop the job over CANCEL_GRACE_S ago."""
        return self.cancel_asked is not None and time.monotonic() - self.cancel_asked > CANCEL_GRACE_S

    def over_time(self, job_timeout: float) -> str | None:
        """Why the run has taken too long, or None: *job_timeout* is per piece of a long input."""
        parts = self.progress.parts if self.progress is not None else 1
        if self.age() <= job_timeout * parts:
            return None
        return f"separation exceeded job_timeout ({job_timeout:g} s{f' for each of {parts} parts' if parts > 1 else ''})"


@dataclass(frozen=True)
class Watchers:
    """What a task's run reports to and asks about, each called from the wait's turns."""

    announce: Callable[[], None] | None = None  # once, when the first run has begun
    report: Callable[[Progress], None] | None = None  # the run's progress, at most every progress_interval
    cancelled: Callable[[], bool] = lambda: False  # has a cancellation been requested?
    turn: Callable[[], None] | None = None  # each turn of the run's wait: the pipeline takes the next task


@dataclass(frozen=True)
class SentAhead:
    """The next task's job, sent to the engine child while the run before it goes on (the pipeline):
    its turn takes it on (:meth:`Separation.separate`), or it is forgotten."""

    task_uuid: str
    number: int
    workdir: Path


class Separation:
    def __init__(self, engine: Engine, cfg: ProcessorConfig, runtime: Runtime, host: HostTrouble):
        self.engine = engine
        self.cfg = cfg
        self.runtime = runtime
        self.host = host
        self.member: GroupMember | None = None
        self.run: Run | None = None
        self.ahead: SentAhead | None = None

    def send_ahead(self, task_uuid: str, job: Callable[[str], Job]) -> bool:
        """Send the next task's job to the engine child while this run goes on, so that the child
        prepares it beside this run's forward and begins its own as this one ends (device_gate.py);
        False where it is not sent (one is already, no run, a full disk): it is sent in its turn."""
        if self.ahead is not None or self.run is None or not self.engine.ready:
            return False
        try:
            workdir = Path(tempfile.mkdtemp(prefix=f".work-{task_uuid}-", dir=self.cfg.output_dir))
        except OSError:
            return False
        try:
            number = self.engine.submit_ahead(job(str(workdir)))
        except OSError:  # the child is gone: this run's wait finds it out
            shutil.rmtree(workdir, ignore_errors=True)
            return False
        self.ahead = SentAhead(task_uuid, number, workdir)
        return True

    def forget_ahead(self, task_uuid: str | None = None) -> None:
        """The job sent ahead (for *task_uuid*, if given) is not wanted: the child stops it and its
        work directory goes."""
        ahead = self.ahead
        if ahead is not None and (task_uuid is None or ahead.task_uuid == task_uuid):
            self.ahead = None
            self.engine.forget(ahead.number, str(ahead.workdir))

    def _taken_ahead(self, task_uuid: str) -> SentAhead | None:
        """*task_uuid*'s job sent ahead, now waited for, if the child still holds it; one for another
        task, or lost with a child that died since, is forgotten."""
        ahead, self.ahead = self.ahead, None
        if ahead is None:
            return None
        if ahead.task_uuid == task_uuid and self.engine.adopt(ahead.number):
            return ahead
        self.engine.forget(ahead.number, str(ahead.workdir))
        return None

    def await_engine(self) -> bool:
        """Wait for the engine's model to load and warm up; False if a stop came first.

        A child that dies while loading is replaced a few times before the worker gives up: one
        lost child (the OOM killer, a GPU reset) should not cost the whole worker its group
        membership.
        """
        deaths = 0
        budget = Deadline.after(self.cfg.engine_start_timeout)
        while self.runtime.turn(through_drain=False) is None:
            try:
                if self.engine.poll_ready(ENGINE_WAIT_S):
                    return True
            except EngineDied as e:
                deaths += 1
                if e.fatal_config or deaths >= ENGINE_LOAD_TRIES:
                    raise
                log.warning("separation engine died while loading the model; restarting it", reason=str(e))
                self.engine.restart("died_while_loading")
            if budget.expired():
                raise EngineDied(f"model did not load within engine_start_timeout ({self.cfg.engine_start_timeout:g} s)")
            self.runtime.keep_membership(KEEPALIVE_POLL_MS)
        return False

    def separate(self, claim: Claim, task_uuid: str, job: Callable[[str], Job],
                 watchers: Watchers) -> Separated | JobFailed | JobCancelled | Abandoned:
        """Run *task_uuid*'s separation until it has an outcome; *job(workdir)* is the run to submit."""
        reasons: list[str] = []
        patience = self.host.patience()
        ahead = self._taken_ahead(task_uuid)
        while len(reasons) <= self.cfg.job_retries:
            if watchers.cancelled():
                if ahead is not None:
                    self.engine.forget(ahead.number, str(ahead.workdir))
                return JobCancelled()
            if not self.engine.ready and not self.await_engine():
                return Abandoned("stopping while the engine restarted")
            try:
                workdir = ahead.workdir if ahead is not None else \
                    Path(tempfile.mkdtemp(prefix=f".work-{task_uuid}-", dir=self.cfg.output_dir))
            except OSError as e:
                error = f"could not make a work directory: {e.strerror}"
                outcome: JobOutcome | Abandoned | Retry = (NoSpace(error) if e.errno == errno.ENOSPC
                                                           else JobFailed(error, "workdir"))
            else:
                assert self.member is not None, "the daemon joins its group (join() sets the member) before a task"
                with self.member.working():
                    outcome = self._run_job(claim, job(str(workdir)), watchers, ahead)
                ahead = None
                watchers = dataclasses.replace(watchers, announce=None)
                if isinstance(outcome, Separated):
                    return outcome
                shutil.rmtree(workdir, ignore_errors=True)
            if isinstance(outcome, NoSpace):
                # This host's disk, not the task: wait for space (retention, an operator) and run it
                # again, for as long as a job may take.
                if patience.exhausted():
                    return JobFailed(f"the output disk stayed full for over {self.cfg.job_timeout:g} s: {outcome.error}",
                                     "disk_full")
                gave_up = self.host.wait(
                    patience, claim, event="output disk full; the task runs again once there is space",
                    error=outcome.error, status=f"output disk full: task {task_uuid} waits for space to run again",
                    trouble="the output disk was full")
                if gave_up is not None:
                    return gave_up
                continue
            if not isinstance(outcome, Retry):
                return outcome
            reasons.append(outcome.reason)
            log.warning("separation run did not finish; retrying", reason=outcome.reason, runs=len(reasons))
        return JobFailed(f"separation did not finish in {len(reasons)} runs: {'; '.join(reasons)}", "runs_exhausted")

    def _run_job(self, claim: Claim, job: Job, watchers: Watchers,
                 ahead: SentAhead | None = None) -> JobOutcome | Abandoned | Retry:
        """*job* run to its outcome; *ahead*: it is in the child already, sent ahead and adopted."""
        try:
            if ahead is None:
                self.engine.submit(job)
        except OSError:
            self.engine.restart("gone_at_submit")
            return Retry("separation engine was gone when the job was submitted")
        run = self.run = Run(job.task_uuid)
        try:
            if watchers.announce is not None:
                watchers.announce()  # once the child has the job: "processing" goes out as it starts
            outcome = self._follow(claim, run, watchers)
        finally:
            self.run = None
        if outcome is None:
            self.engine.kill()
            return Abandoned("second stop signal" if self.runtime.lifecycle.quick else
                             "the drain window ended before the separation did")
        if isinstance(outcome, Abandoned | Retry) or run.child_stuck:
            # The run was given up, or the engine is gone: a fresh child.
            self.engine.restart("cancel_ignored" if run.child_stuck else
                                "run_abandoned" if isinstance(outcome, Abandoned) else "run_unfinished")
        return outcome

    def _follow(self, claim: Claim, run: Run, watchers: Watchers) -> JobOutcome | Abandoned | Retry | None:
        """Follow the run to how it ended, one turn at a time (through the drain); None once the drain
        window is over, or a second signal came, first."""
        while self.runtime.turn(through_drain=True) is None:
            if claim.lost:
                return Abandoned("the partition was reassigned to another worker", "rebalance")
            if too_long := run.over_time(self.cfg.job_timeout):
                return Retry(too_long)
            if run.cancel_asked is None:
                if watchers.cancelled():
                    self._ask_to_stop(run)
            elif run.cancel_overdue():
                log.warning("the engine did not stop the cancelled job in time; killing it", grace_s=CANCEL_GRACE_S)
                run.child_stuck = True
                return JobCancelled()
            try:
                outcome = self.engine.poll_result(ENGINE_WAIT_S)
            except EngineDied as e:
                return Retry(str(e))
            self._report(run, watchers)
            if outcome is not None:
                return outcome
            if watchers.turn is not None:
                watchers.turn()
            self.runtime.keep_membership(JOB_KEEPALIVE_POLL_MS)
        return None

    def _ask_to_stop(self, run: Run) -> None:
        log.info("cancellation requested; asking the engine to stop the job")
        run.cancel_asked = time.monotonic()
        self.engine.cancel()

    def _report(self, run: Run, watchers: Watchers) -> None:
        run.progress = self.engine.progress
        if run.progress is None or run.progress == run.reported or watchers.report is None:
            return
        new_step = run.reported is None or run.progress.step != run.reported.step  # a model load: say so at once
        if new_step or time.monotonic() - run.reported_at >= self.cfg.progress_interval:
            run.reported, run.reported_at = run.progress, time.monotonic()
            watchers.report(run.progress)
