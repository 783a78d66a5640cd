"""A task that waits out its host's trouble: a full output disk, a store that fails.

That is the deployment's trouble, not the task's: the task waits, uncommitted and with the group
membership kept, and its step runs again; the waits double up to a minute, for as long as a job
may take (``processor.job_timeout``).  Only then does the task fail.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import structlog

from uvrd.kafka.group_member import Claim
from uvrd.outcomes import Abandoned
from uvrd.runtime.backoff import Backoff
from uvrd.runtime.wait import Runtime
from uvrd.storage import StorageError

log = structlog.get_logger("uvrd.processor")

HOST_WAIT_S = (2.0, 60.0)  # the first wait before the task's step runs again, doubling up to the longest
T = TypeVar("T")


class HostTrouble:
    def __init__(self, runtime: Runtime, limit: float):
        self.runtime = runtime
        self.limit = limit
        self.status: str | None = None  # STATUS= while a task waits

    def patience(self) -> Backoff:
        return Backoff(*HOST_WAIT_S, limit=self.limit)

    def wait(self, patience: Backoff, claim: Claim, *, event: str, error: str, status: str,
             trouble: str) -> Abandoned | None:
        """Wait out *trouble* for *patience*'s next wait: *event* in the journal, *status* to systemd;
        an Abandoned if a stop or a rebalance ends the wait."""
        seconds = patience.next()
        log.error(event, error=error, retry_in_s=seconds)
        self.status = status
        try:
            if not self.runtime.pause(seconds, through_drain=False):
                return Abandoned(f"stopping while {trouble}")
        finally:
            self.status = None
        if claim.lost:
            return Abandoned("the partition was reassigned to another worker", "rebalance")
        return None

    def with_store(self, task_uuid: str, claim: Claim, step: Callable[[], T]) -> T | Abandoned:
        """*step()*, run again while the store fails (unreachable, refusing, broken off); the
        StorageError once it has failed for longer than a job may take."""
        patience = self.patience()
        while True:
            try:
                return step()
            except StorageError as e:
                if patience.exhausted():
                    raise StorageError(f"{e} (the store kept failing for over {self.limit:g} s)") from None
                gave_up = self.wait(patience, claim, event="storage failed; the task waits and tries again",
                                    error=str(e), status=f"storage failed: task {task_uuid} waits to try again",
                                    trouble="the store was failing")
                if gave_up is not None:
                    return gave_up
