"""How often this host has started each task, across restarts of its worker.

A task whose separation kills the whole worker (OOM, a hung driver that the
watchdog ends) would otherwise be redelivered forever: a crash loop on one
message.  The count lives on disk beside the outputs and is dropped once the
task's result is committed.
"""

from __future__ import annotations

from pathlib import Path

import structlog

log = structlog.get_logger("uvrd.attempts")


class AttemptLedger:
    def __init__(self, directory: Path):
        self.directory = directory

    def start(self, task_uuid: str) -> int:
        """Record one more start of *task_uuid*; return how many starts that makes."""
        count = self._read(task_uuid) + 1
        self._write(task_uuid, count)
        return count

    def undo(self, task_uuid: str) -> None:
        """Take back a start that ended by the worker's own choice (a stop, a lost partition)."""
        count = self._read(task_uuid) - 1
        if count > 0:
            self._write(task_uuid, count)
        else:
            self.clear(task_uuid)

    def _read(self, task_uuid: str) -> int:
        try:
            return int((self.directory / task_uuid).read_text() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def _write(self, task_uuid: str, count: int) -> None:
        path = self.directory / task_uuid
        tmp = path.with_name(f".{task_uuid}.tmp")
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            # No fsync: the count guards against a worker that dies (OOM, a crash, the watchdog), and
            # the page cache outlives the process; a host that loses power costs at most one more
            # start.  It was 1-2 ms of every task.
            tmp.write_text(str(count))
            tmp.replace(path)
        except OSError as e:
            # A full or read-only disk must not take the worker down with it: the count only
            # guards against crash loops, and the task itself can still run (or fail clearly).
            tmp.unlink(missing_ok=True)
            log.warning("could not record the task's start", error=str(e), starts=count)

    def clear(self, task_uuid: str) -> None:
        (self.directory / task_uuid).unlink(missing_ok=True)
