"""The separation engine: a child process that holds the model.

The model is loaded once per child.  Separations run in the child so that a
job the worker may not wait for (stop deadline, job_timeout, a revoked
partition) can be ended with SIGKILL without losing the worker, and a crash
inside torch/onnxruntime kills only the child.  The parent never imports
torch.  A thread in the child stamps a shared heartbeat, so a hung or
stopped child is visible from the parent.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import multiprocessing.resource_tracker
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from uvrd.metrics import processor as processor_metrics
from uvrd.processor import engine_child
from uvrd.processor.engine_protocol import (EngineSettings, Fatal, For, Forget, Job, JobOutcome, Loaded, ModelLoaded,
                                            Progress, Separated, Warming)

log = structlog.get_logger("uvrd.engine")


class EngineDied(Exception):
    """The child exited (or could not start); the message says how."""

    def __init__(self, message: str, fatal_config: bool = False):
        super().__init__(message)
        self.fatal_config = fatal_config


class Engine:
    def __init__(self, settings: EngineSettings, child: Callable = engine_child.main):
        self.settings = settings
        self._child = child  # the child's entry point: a scripted one speaks the same protocol in the unit tests
        self._ctx = multiprocessing.get_context("spawn")
        self._proc = None
        self._conn = None
        self._heartbeat = None
        self.ready = False
        self.warming = False  # loaded, separating the warm-up clip
        self.started_at = 0.0
        self.load_info: dict = {}
        self._cancel = None  # shared with the child: the number of the job to stop
        self._jobs = 0  # jobs sent, over every child: a job's number is never reused
        self.progress: Progress | None = None  # the job's latest, while one runs
        self.models: dict[str, dict] = {}  # the child's loaded models, as it described them
        # Two jobs may be in this child (device_gate.py): the one whose outcome the processor waits for,
        # and one sent ahead (:meth:`submit_ahead`) that it takes on later (:meth:`adopt`) or forgets.
        self._current = 0
        self._unanswered: list[int] = []  # the numbers sent to this child and not yet answered, oldest first
        self._early: dict[int, JobOutcome] = {}  # answers to the job sent ahead, come before its turn
        self._latest: dict[int, Progress] = {}  # the job sent ahead's progress, for when its turn comes
        self._forgotten: dict[int, str] = {}  # jobs not wanted any more -> their work directory

    # -- process management -------------------------------------------
    def start(self) -> None:
        parent_conn, child_conn = self._ctx.Pipe()
        self._heartbeat = self._ctx.Value("d", time.monotonic(), lock=False)
        self._cancel = self._ctx.Value("q", 0, lock=False)
        self._proc = self._ctx.Process(
            target=self._child, args=(child_conn, self._heartbeat, self.settings, self._cancel),
            name="uvrd-engine", daemon=True,
        )
        self._proc.start()
        child_conn.close()
        self._conn = parent_conn
        self.ready = self.warming = False
        self.started_at = time.monotonic()
        log.info("engine starting", pid=self._proc.pid, model=self.settings.models[0])

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def alive(self) -> bool:
        return self._proc is not None and self._proc.is_alive()

    def heartbeat_age(self) -> float:
        if self._heartbeat is None:
            return float("inf")
        return time.monotonic() - self._heartbeat.value

    def kill(self) -> None:
        if self._proc is None:
            return
        if self._proc.is_alive():
            self._proc.kill()
        self._proc.join(5)
        log.info("engine killed", pid=self._proc.pid)
        self._close()

    def restart(self, cause: str) -> None:
        """A fresh child for the one that died or was given up; *cause* is the metrics' word for why."""
        processor_metrics.engine_restarted(cause)
        self.kill()
        self.start()

    def close(self) -> None:
        """End the child, then the resource tracker that ``spawn`` started beside it.

        The tracker exits on its own a moment after its last client, but under
        ``KillMode=mixed`` systemd SIGKILLs whatever is left the instant the main
        process exits, and logs each kill as if something had gone wrong.
        """
        child = self._proc
        self.kill()
        if child is not None and child.exitcode is None:
            return  # still dying, and holding the tracker open: waiting for it could hang the stop
        tracker = multiprocessing.resource_tracker._resource_tracker
        try:
            tracker._stop()  # waits for it; CPython's own test suite uses this
        except (AttributeError, OSError, ChildProcessError):
            pass

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._proc = self._conn = None
        self.ready = self.warming = False
        self.models = {}
        for workdir in self._forgotten.values():  # the child that wrote into them is gone
            shutil.rmtree(workdir, ignore_errors=True)
        self._current, self._unanswered, self._early, self._latest, self._forgotten = 0, [], {}, {}, {}

    # -- messages ---------------------------------------------------------
    def _receive(self, timeout: float):
        """The child's next message, None if none came in *timeout*; EngineDied if it is gone."""
        try:
            if self._conn.poll(timeout):
                return self._conn.recv()
        except (EOFError, OSError):
            pass
        else:
            if self._proc.is_alive():
                return None
        self._proc.join(1)
        code = self._proc.exitcode
        how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited with status {code}"
        raise EngineDied(f"separation engine {how}")

    def poll_ready(self, timeout: float) -> bool:
        """Wait up to *timeout* for the model to load and warm up; True once it has."""
        if self.ready:
            return True
        match self._receive(timeout):
            case None:
                return False
            case Fatal(message=message, config_problem=config_problem):
                self.kill()
                raise EngineDied(message, fatal_config=config_problem)
            case Warming(info=info):
                self.warming = True
                log.info("engine warming up", pid=self._proc.pid, **info)
                return False
            case Loaded(info=info):
                self.ready, self.warming = True, False
                self.load_info = info
                self._gpu_memory(info.pop("gpu_memory", None))
                # What the heartbeat tells of it, as the child described it (as ModelLoaded does later ones).
                self.models = {info["model"]: info.pop("described", {"model": info["model"]})}
                log.info("engine ready", pid=self._proc.pid, load_s=round(time.monotonic() - self.started_at, 2),
                         **self.load_info)
                return True
            case other:
                raise EngineDied(f"separation engine said {type(other).__name__} while loading")

    def _gpu_memory(self, used_total: tuple[int, int] | None) -> None:
        """The child's report of its device's memory, for the metrics; a CPU engine reports none."""
        if used_total is not None:
            processor_metrics.gpu_memory(self.load_info.get("device") or "cuda", *used_total)

    def submit(self, job: Job) -> int:
        """Send *job* and wait for it (:meth:`poll_result`); its number."""
        self._current = self._send(job)
        self.progress = None
        return self._current

    def submit_ahead(self, job: Job) -> int:
        """Send *job* while another runs: the child begins it as soon as the one before lets it
        (device_gate.py); its number, for :meth:`adopt` or :meth:`forget`."""
        return self._send(job)

    def _send(self, job: Job) -> int:
        Path(job.workdir).mkdir(parents=True, exist_ok=True)
        self._jobs += 1
        self._conn.send(dataclasses.replace(job, number=self._jobs))
        self._unanswered.append(self._jobs)
        return self._jobs

    def holds(self, number: int) -> bool:
        """Whether the job numbered *number* was sent to this child (not lost with an earlier one) and
        not forgotten."""
        return (number in self._unanswered or number in self._early) and number not in self._forgotten

    def adopt(self, number: int) -> bool:
        """The job sent ahead as *number* is the one waited for now; False if this child does not hold it."""
        if not self.holds(number):
            return False
        self._current = number
        self.progress = self._latest.pop(number, None)
        return True

    def forget(self, number: int, workdir: str) -> None:
        """The job sent ahead as *number* is not wanted: the child stops it, its answer is dropped and
        *workdir* removed once the child is done with it."""
        if not self.holds(number):
            shutil.rmtree(workdir, ignore_errors=True)  # lost with an earlier child: nothing writes there
            return
        self._latest.pop(number, None)
        if self._early.pop(number, None) is not None:
            shutil.rmtree(workdir, ignore_errors=True)  # answered already
            return
        self._forgotten[number] = workdir
        try:
            self._conn.send(Forget(number))
        except OSError:
            pass  # the child is gone: the next poll says so, and _close removes the workdir

    def cancel(self) -> None:
        """Ask the child to stop the job waited for at its next step; it answers JobCancelled, or the
        job's own outcome if it ended first."""
        if self._cancel is not None:
            self._cancel.value = self._current

    def poll_result(self, timeout: float) -> JobOutcome | None:
        """The outcome (Separated, JobFailed, NoSpace or JobCancelled) of the job waited for, or None
        if none came in *timeout*; a Progress on the way is kept in :attr:`progress`."""
        if (early := self._early.pop(self._current, None)) is not None:
            return early
        msg = self._receive(timeout)
        if isinstance(msg, ModelLoaded):
            self.models[msg.info["model"]] = msg.info
            self.models = {name: info for name, info in self.models.items() if name in msg.loaded}
            return None
        if msg is None:
            return None
        number = self._unanswered[0] if self._unanswered else self._current  # a bare answer: the oldest job's
        if isinstance(msg, For):
            number, msg = msg.job, msg.message
        if isinstance(msg, Progress):
            if number == self._current:
                self.progress = msg
            elif number in self._unanswered and number not in self._forgotten:
                self._latest[number] = msg
            return None
        if not isinstance(msg, JobOutcome):
            raise EngineDied(f"separation engine said {type(msg).__name__} while separating")
        sent = number in self._unanswered
        if sent:
            self._unanswered.remove(number)
        if isinstance(msg, Separated):
            self._gpu_memory(msg.gpu_memory)
        if number == self._current:
            return msg
        if (workdir := self._forgotten.pop(number, None)) is not None:
            shutil.rmtree(workdir, ignore_errors=True)
        elif sent:
            self._early[number] = msg  # the job sent ahead ended before its turn came
        return None
