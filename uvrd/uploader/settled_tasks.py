"""The tasks whose webhook outcome this uploader has committed lately: one webhook per task.

A task may have more than one result record: the processor's at-least-once mode redoes a task
whose commit a crash cut short ("consumers deduplicate by task_uuid"), and a broker that loses a
transaction's state in a crash (Tansu, killed mid-commit) may expose a result its producer then
wrote again.  The uploader delivers the first and commits the others without a call.  The memory
is this process's, bounded; after a restart the receiver's Idempotency-Key is what remains.
"""

from __future__ import annotations

from collections import OrderedDict

CAPACITY = 100_000  # task_uuids of up to 128 characters: a few tens of MB at most


class SettledTasks:
    def __init__(self, capacity: int = CAPACITY):
        self.capacity = capacity
        self._tasks: OrderedDict[str, None] = OrderedDict()

    def add(self, task_uuid: str) -> None:
        self._tasks[task_uuid] = None
        self._tasks.move_to_end(task_uuid)
        while len(self._tasks) > self.capacity:
            self._tasks.popitem(last=False)

    def __contains__(self, task_uuid: str) -> bool:
        return task_uuid in self._tasks

    def __len__(self) -> int:
        return len(self._tasks)
