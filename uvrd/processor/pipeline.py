"""The processor's pipeline (``processor.pipeline = true``): while one task is in the model, the next
one's input is fetched and the last one's stems are encoded and stored, each on a thread of its own.

Why: on an accelerator the model step is short, and fetching and storing (the network, the disk) would
leave it idle between tasks.  What keeps exactly-once as it was:

- one task at most waits on each side of the model (:class:`Stage` holds one job), so the extra
  memory is one task's input file and one task's stems on disk, nothing in RAM beyond the threads
  and one ffmpeg run encoding a stem (stem_encoding.py: audio-separator's FLAC writing moved here);
- the fetch stage also decodes the input (decoded_input.py), so that the engine child's model does
  not wait for the decode either: one more input's samples on disk;
- once decoded, the next task's job goes to the engine child while the task before is still in it
  (pipeline_turns.py's ``_send_ahead``), so the child's own steps around the model overlap the other
  job's forward (device_gate.py): nothing of it is committed, or even announced, until its turn;
- only the main thread touches Kafka: the stages fetch and store, the main thread polls, commits and
  waits on them through the runtime (so heartbeats, signals and the watchdog go on);
- commits stay in offset order: a task is settled only after the one before it (:class:`Behind`) has
  been, in its own transaction, as in the sequential order;
- a stop or a rebalance abandons the task taken ahead (:class:`Ahead`) without a commit, so it is
  redelivered; the drain window covers the task in the model and the stems already separated.

A stage's failure is not the task's: the main thread then does the step again itself, with the
waits for a failing store that the sequential order has (host_trouble.py).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from uvrd.kafka.group_member import Claim
from uvrd.outcomes import Rejected
from uvrd.processor import decoded_input
from uvrd.processor.accept import Accepted
from uvrd.processor.engine_protocol import Separated
from uvrd.processor.task_events import TaskEvents

T = TypeVar("T")


# The stages' threads run niced: on a host short of cores, the engine child's own steps around the
# forward (what the model waits on) go before a stage's decode or upload.
STAGE_NICENESS = 10


class Stage(Generic[T]):
    """A thread that runs one job at a time for the main thread, which asks whether it is done."""

    def __init__(self, name: str):
        self.name = name
        self._pending: Future[T] | None = None

    @property
    def busy(self) -> bool:
        return self._pending is not None and not self._pending.done()

    def start(self, job: Callable[[], T]) -> Future[T]:
        """Run *job* on a thread of its own; one job at a time (the bound on what waits)."""
        if self.busy:
            raise RuntimeError(f"the {self.name} stage already has a job")
        future: Future[T] = Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            with contextlib.suppress(OSError):  # Linux nices a thread of its own (its native id)
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), STAGE_NICENESS)
            try:
                future.set_result(job())
            except BaseException as e:  # handed to the main thread, which decides what it means
                future.set_exception(e)

        # A daemon thread: a stop that abandons the job must not wait for a download to end.
        threading.Thread(target=run, name=f"uvrd-{self.name}", daemon=True).start()
        self._pending = future
        return future


@dataclass(frozen=True)
class FetchedInput:
    """What the fetch stage leaves for a task's turn in the model: its input, and its samples decoded
    ahead (decoded_input.py; None where the child decodes the input itself)."""

    path: Path
    decoded: Path | None = None


@dataclass
class Ahead:
    """The task taken while the one before it was in the model: accepted (or rejected) and its input
    being fetched; nothing of it is committed until its turn."""

    record: Any  # kafka-python's ConsumerRecord
    claim: Claim
    accepted: Accepted | Rejected
    fetched: Future[FetchedInput] | None = None  # None for a rejected task: nothing to fetch
    sent: bool = False  # its job was offered to the engine child ahead of its turn (once, sent or not)

    def discard(self, release_input: Callable[[Path], None]) -> None:
        """Abandoned: whatever was fetched goes (a fetch still running is left to finish, and its
        private copy and decoded samples to the retention sweep of output_dir)."""
        if self.fetched is not None and self.fetched.done() and self.fetched.exception() is None:
            fetched = self.fetched.result()
            release_input(fetched.path)
            decoded_input.remove(fetched.decoded)


@dataclass
class Behind:
    """The task separated before the one in the model: its stems being stored, its result not yet
    committed."""

    record: Any  # kafka-python's ConsumerRecord
    claim: Claim
    accepted: Accepted
    ran: Separated
    started_at: str
    events: TaskEvents
    stems: dict[str, str]  # as the store stage left them: encoded (stem_encoding.py) once it has
    stored: Future[dict[str, str]] | None = None  # the store stage's job: the stems' refs

    @property
    def workdir(self) -> Path:
        return Path(next(iter(self.ran.stems.values()))).parent

    def remove_workdir(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)
