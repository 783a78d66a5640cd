"""Keep a consumer-group join that finished while no poll was waiting for it.

kafka-python 3.0 runs JoinGroup -> SyncGroup as a task on its network thread,
and keeps the task across polls so that a poll that times out mid-join sends
no second JoinGroup.  But it treats a task that *finished* between two polls
like a failed one: the next poll drops the assignment it carries and joins
again, and the group needs another round (Tansu holds each round for 3 s;
Apache Kafka holds it until every member has rejoined, and a leader that
rejoins starts a new rebalance for all).  A processor polls for a moment
every 0.4 s while it separates, so nearly every rebalance during a job took
two or three rounds (measured: 3 JoinGroups and 10 s, where 1 and 3 s do).

The Java client keeps a finished join until a poll has consumed it.  This
does the same: a join task that finished well looks unfinished to the join
loop, which therefore awaits it and gets its assignment at once.  A failed one
still looks finished, so the loop starts another join, as before.  The fix
installs itself only while kafka-python has the defect, recognised by the
line in question.
"""

from __future__ import annotations

import inspect
from collections.abc import Generator
from typing import Any, Protocol

from kafka.coordinator.base import BaseCoordinator

DEFECT = "if self._join_task is None or self._join_task.is_done:"


class _Task(Protocol):
    """What the join loop uses of kafka-python's join task (a kafka.future.Future run as a task)."""

    def failed(self) -> bool: ...

    def __await__(self) -> Generator[Any, None, Any]: ...


class _JoinTask:
    """A join task as the join loop sees it: unfinished until it failed or was consumed."""

    __slots__ = ("task",)

    def __init__(self, task: _Task) -> None:
        self.task = task

    @property
    def is_done(self) -> bool:
        return self.task.failed()

    def __await__(self) -> Generator[Any, None, Any]:
        return self.task.__await__()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.task, name)


def _get(coordinator: BaseCoordinator) -> _JoinTask | None:
    task: _JoinTask | None = coordinator.__dict__.get("_join_task")
    return task


def _set(coordinator: BaseCoordinator, task: _Task | None) -> None:
    coordinator.__dict__["_join_task"] = None if task is None else _JoinTask(task)


def affected() -> bool:
    try:
        return DEFECT in inspect.getsource(BaseCoordinator.join_group_async)
    except (OSError, TypeError, AttributeError):
        return False


def install() -> bool:
    """Apply the fix if this kafka-python needs it; True if it is in place."""
    if isinstance(BaseCoordinator.__dict__.get("_join_task"), property):
        return True
    if not affected():
        return False
    BaseCoordinator._join_task = property(_get, _set)
    return True
