"""How long a task's files are kept, and deleting what outlived it.

A finished task *expires* at its ``finished_at`` plus ``api.result_retention``: from then on it
answers 410 and its stems and input are deleted.  ``DELETE /v1/tasks/<uuid>/stems`` ends it
earlier: its status then records ``stems_deleted_at``, and it answers 410 from that moment.  A task
that has not finished has no expiry (``expires_at`` is null): its input must stay for it to run.

The sweep (the uploader's, every ``uploader.retention_interval``) walks what is stored, the spool
and output directories of its host and the bucket's inputs and stems, and asks of each entry named
after a task what the task's status says (:func:`verdict`):

- the task expired or its stems were deleted: the entry goes, whatever its age;
- the task finished and has not expired: it stays, whatever its age (its expiry decides);
- otherwise (a task still queued or running, or no task known by that name: an orphan, a killed
  job's work directory): its age decides, as before tasks had an expiry.  A stem or work directory
  goes once it is ``api.result_retention`` old, a spool file once ``uploader.spool_retention`` old:
  a queued task's input is that old only if the backlog is.

Several sweeps may run at once (an uploader on each host of a fleet): deleting what is already gone
is no error, locally or in a bucket, so they only repeat each other's work.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import structlog

from uvrd.messages import TASK_UUID_RE

log = structlog.get_logger("uvrd.storage.retention")

# What becomes of a stored entry named after a task.
Verdict = Literal["delete", "keep", "age"]
DELETE: Verdict = "delete"
KEEP: Verdict = "keep"
BY_AGE: Verdict = "age"
# task_uuid -> what to do with the files named after it.
Judge = Callable[[str], Verdict]

# The extension of an input's name as the api gives it (uvrd/api/audio_types.py sniff).
_EXTENSION_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")


@dataclass(frozen=True)
class Gone:
    """A task that answers 410: why (``expired`` or ``deleted``) and since when."""

    reason: Literal["expired", "deleted"]
    at: datetime

    @property
    def at_iso(self) -> str:
        return iso(self.at)

    @property
    def reason_field(self) -> str:
        """The member of a 410 answer that gives the time: ``expired_at`` or ``stems_deleted_at``."""
        return "stems_deleted_at" if self.reason == "deleted" else "expired_at"

    def sentence(self, task_uuid: str) -> str:
        if self.reason == "deleted":
            return f"task {task_uuid} is gone: its stems and input were deleted at {self.at_iso} on request"
        return f"task {task_uuid} is gone: it expired at {self.at_iso}, and its stems and input are deleted"


def iso(at: datetime) -> str:
    """As uvrd writes times (messages.now_iso): UTC, milliseconds, ``+00:00``."""
    return at.astimezone(UTC).isoformat(timespec="milliseconds")


def parse_time(value: object) -> datetime | None:
    """An ISO 8601 time from a status record, as an aware UTC datetime; None if absent or unreadable
    (a naive time is taken as UTC, which is what uvrd writes)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def expires_at(state: dict, retention: float) -> datetime | None:
    """When the task's stems and input go: its ``finished_at`` plus *retention* seconds; None while
    it has not finished (no ``finished_at``: queued, running, or a replay under way)."""
    finished = parse_time(state.get("finished_at"))
    if finished is None:
        return None
    try:
        return finished + timedelta(seconds=retention)
    except OverflowError:  # a forged finished_at near year 9999: past what a time can say, so never
        return None


def gone(state: dict, retention: float, now: float) -> Gone | None:
    """Whether the task answers 410 at *now* (a Unix time): its stems were deleted on request, or it
    expired.  A deletion counts from its record on, an expiry from expires_at on (inclusive)."""
    deleted = parse_time(state.get("stems_deleted_at"))
    if deleted is not None:
        return Gone("deleted", deleted)
    expiry = expires_at(state, retention)
    if expiry is not None and expiry.timestamp() <= now:
        return Gone("expired", expiry)
    return None


def verdict(state: dict | None, retention: float, now: float) -> Verdict:
    """What the sweep does with the files of a task whose merged status is *state* (None: unknown)."""
    if state is None:
        return BY_AGE
    if gone(state, retention, now) is not None:
        return DELETE
    if expires_at(state, retention) is not None:
        return KEEP
    return BY_AGE


def input_task(name: str) -> str | None:
    """The task an input's name says it belongs to: ``<task_uuid>.<ext>``, as the api names it."""
    stem, dot, extension = name.rpartition(".")
    if not dot or not 1 <= len(extension) <= 8 or not set(extension) <= _EXTENSION_CHARS:
        return None
    return stem if TASK_UUID_RE.fullmatch(stem) else None


def stems_task(name: str) -> str | None:
    """The task an output directory (or a bucket's stems folder) is named after: ``<task_uuid>``."""
    return name if TASK_UUID_RE.fullmatch(name) else None


def sweep(directories: list[Path], max_age: float, now: float | None = None, keep: frozenset[str] = frozenset(),
          judge: Judge | None = None, task_of: Callable[[str], str | None] = stems_task) -> int:
    """Remove entries directly under *directories* that are done with; return the count.

    An entry *task_of* names a task is what *judge* says of it (:func:`verdict`); any other, or any
    when there is no *judge*, goes once it has not been modified for *max_age* seconds.  Entries
    named in *keep* stay (directories that hold other state).
    """
    cutoff = (time.time() if now is None else now) - max_age
    removed = 0
    for directory in directories:
        try:
            entries = list(os.scandir(directory))
        except FileNotFoundError:
            continue
        for entry in entries:
            if entry.name in keep:
                continue
            task_uuid = task_of(entry.name) if judge is not None else None
            decided = judge(task_uuid) if judge is not None and task_uuid is not None else BY_AGE
            if decided == KEEP:
                continue
            try:
                if decided == BY_AGE and entry.stat(follow_symlinks=False).st_mtime >= cutoff:
                    continue
                remove(Path(entry.path))
                removed += 1
            except FileNotFoundError:
                continue
            except OSError as e:
                log.warning("could not remove an expired file", path=entry.path, error=e.strerror)
    if removed:
        log.info("retention sweep", removed=removed, max_age_s=max_age)
    return removed


def remove(path: Path) -> None:
    """Delete a file, or a directory with what it holds (a link is removed, never followed)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        os.unlink(path)
