"""A key's quotas (``max_active``: tasks queued or running at once; ``audio_seconds_per_day``: audio
accepted per UTC day) and ``GET /v1/usage``.

Use is counted from the status board, not in the api: a key's tasks in a state that is not final
(queued, processing) are its active tasks, and the ``audio_seconds`` of its tasks submitted on the
current UTC day (each ``queued`` status record carries them) are its day's audio.  So every worker
of every api counts the same tasks, restarts included.

A submission is checked before any of its files is spooled or stored: every file's length is read
from its header first (audio_probe, as the processor reads it; a file whose header gives no
length counts as ``processor.max_audio_seconds``, the most a processor would separate), then the
whole request is admitted or refused (429 with ``Retry-After``), a batch as one.  Within one
worker, an admitted request holds a reservation until its tasks' ``queued`` records are on the
board, so two requests of one key at once cannot both pass a quota there.  Between workers and
apis, one sees another's tasks once its status reader folds their ``queued`` records in (well
under a second): two requests of one key in that window can together pass a quota by one
request's worth (README, "Quotas").
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from uvrd.api.errors import ApiError
from uvrd.keys.record import Quota
from uvrd.processor import audio_probe

if TYPE_CHECKING:
    from uvrd.api.backend import Backend

# max_active: when a task of the key may have ended (nothing better is known).
ACTIVE_RETRY_AFTER_S = 30


@dataclass(frozen=True)
class Use:
    active: int
    audio_seconds: float


def day_of(now: datetime) -> str:
    return now.strftime("%Y-%m-%d")


def next_day(now: datetime) -> datetime:
    return datetime(now.year, now.month, now.day, tzinfo=UTC) + timedelta(days=1)


def counted_seconds(path: str, max_audio_seconds: float) -> float:
    """What one input counts against its key's day: its length from its header, or the most a
    processor would separate when the header does not say (or the file cannot be read: the
    processor refuses it then, but the api does not judge it)."""
    try:
        seconds = audio_probe.probe(path).seconds
    except Exception:  # Unusable, or whatever a broken header makes libsndfile raise
        seconds = None
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return float(max_audio_seconds)
    return round(min(seconds, float(max_audio_seconds)), 3)


def refusal(name: str, quota: Quota, use: Use, tasks: int, seconds: float, now: datetime) -> ApiError | None:
    """The 429 a request of *tasks* tasks and *seconds* audio seconds gets from key *name* with
    *quota* and *use*, or None when it fits."""
    if quota.max_active is not None and use.active + tasks > quota.max_active:
        return ApiError(429, f"key {name!r} is over its max_active quota: {use.active} of its tasks are queued or "
                             f"running, this request adds {tasks} and the quota allows {quota.max_active} at once; "
                             "nothing was queued", {"Retry-After": str(ACTIVE_RETRY_AFTER_S)})
    limit = quota.audio_seconds_per_day
    if limit is not None and use.audio_seconds + seconds > limit:
        reset = next_day(now)
        never = f"; a request longer than {limit} s is never accepted" if seconds > limit else ""
        return ApiError(429, f"key {name!r} is over its audio_seconds_per_day quota: {use.audio_seconds:g} s accepted "
                             f"today (UTC), this request adds {seconds:g} s and the quota allows {limit} s a day, "
                             f"until {reset.isoformat()}{never}; nothing was queued",
                        {"Retry-After": str(max(1, math.ceil((reset - now).total_seconds())))})
    return None


class QuotaGate:
    """One worker's admissions: the board's count plus what this worker has admitted and not yet
    put on the board."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[str, list[Use]] = {}

    def use(self, backend: Backend, name: str, now: datetime) -> Use:
        active, seconds = backend.board.usage(name, day_of(now))
        with self._lock:
            pending = list(self._pending.get(name, ()))
        return Use(active + sum(p.active for p in pending), seconds + sum(p.audio_seconds for p in pending))

    @contextmanager
    def admit(self, backend: Backend, name: str | None, tasks: int, seconds: float) -> Iterator[None]:
        """Admit a request of *tasks* tasks and *seconds* audio seconds from key *name*, or raise its
        429; the reservation lasts until the block ends (its tasks' queued records are on the board
        by then, or they were not queued)."""
        key = backend.keys.get(name) if name else None
        if key is None or (key.quota.max_active is None and key.quota.audio_seconds_per_day is None):
            yield
            return
        reservation = Use(tasks, seconds)
        now = datetime.now(UTC)
        with self._lock:  # the check and the reservation as one, among this worker's threads
            active, day_seconds = backend.board.usage(key.name, day_of(now))
            pending = self._pending.get(key.name, [])
            use = Use(active + sum(p.active for p in pending), day_seconds + sum(p.audio_seconds for p in pending))
            refused = refusal(key.name, key.quota, use, tasks, seconds, now)
            if refused is not None:
                raise refused
            self._pending.setdefault(key.name, []).append(reservation)
        try:
            yield
        finally:
            with self._lock:
                pending = self._pending.get(key.name, [])
                pending.remove(reservation)
                if not pending:
                    self._pending.pop(key.name, None)
