"""The webhook events a task opted into (messages.EVENTS), published as its run goes: on
topics.events through the bulletin, best effort, for the uploader to post.

They report, they do not commit: an event the broker does not take is lost, and one may arrive after
the final delivery, which stays the result's own, exactly once.  ``requeued`` says a run was
interrupted and the task will run again: sent when a stop or a rebalance abandons the run, and when
this host starts a task whose earlier run here died (a crash, a SIGKILL).  A run that died on another
host shows as a second ``started``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from uvrd import messages
from uvrd.kafka.commit_mode import OutRecord
from uvrd.processor.engine_protocol import Progress

# A progress event at most this often: a webhook per progress report (every 2 s) is more than a
# receiver wants.
PROGRESS_EVERY_S = 10.0


class TaskEvents:
    def __init__(self, send: Callable[[OutRecord], None], topic: str, task: messages.Task,
                 clock: Callable[[], float] = time.monotonic):
        self._send, self._topic, self._task, self._clock = send, topic, task, clock
        self._wanted = frozenset(task.events) if task.hook_url else frozenset()
        self._progress_at = float("-inf")

    def started(self, attempt: int, worker: str) -> None:
        if attempt > 1:
            self._event("requeued", reason="its earlier run on this host did not finish", attempt=attempt)
        self._event("started", attempt=attempt, worker=worker)

    def progress(self, progress: Progress) -> None:
        now = self._clock()
        if "progress" in self._wanted and now - self._progress_at >= PROGRESS_EVERY_S:
            self._progress_at = now
            self._event("progress", progress=progress.fraction, step=progress.step)

    def requeued(self, reason: str) -> None:
        self._event("requeued", reason=reason)

    def _event(self, event: str, **fields) -> None:
        if event in self._wanted:
            body = messages.encode(messages.event_message(self._task, event, **fields))
            self._send(OutRecord(self._topic, self._task.task_uuid.encode(), body))
