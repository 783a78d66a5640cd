"""Deleting what outlived its retention: stems of delivered tasks, stale spool files.

Only entries older than the retention are touched; a task's input leaves the
spool when its task succeeds or is cancelled, so a spool file this old is a
dead-lettered task's (kept for a replay) or an orphan (a submission whose
produce failed, say).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import structlog

log = structlog.get_logger("uvrd.storage.retention")


def sweep(directories: list[Path], max_age: float, now: float | None = None, keep: frozenset[str] = frozenset()) -> int:
    """Remove entries directly under *directories* not modified for *max_age* seconds; return the count.

    Entries named in *keep* stay (directories that hold other state).
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
            try:
                if entry.stat(follow_symlinks=False).st_mtime >= cutoff:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)
                removed += 1
            except FileNotFoundError:
                continue
            except OSError as e:
                log.warning("could not remove an expired file", path=entry.path, error=e.strerror)
    if removed:
        log.info("retention sweep", removed=removed, max_age_s=max_age)
    return removed
