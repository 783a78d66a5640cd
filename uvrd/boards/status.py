"""Where each task stands, kept in Kafka: no database.

A compacted topic keyed by task_uuid.  Every component appends the task's
state as it moves it (api: queued; processor: processing and its progress, as
reports on the key ``<task_uuid>/progress``, then succeeded, failed or
cancelled in the same transaction as the result; uploader: delivered or
delivery_failed, in the same transaction as its offset; api: stems_deleted,
when the owner deletes a finished task's stems, which carries the whole
state so that it alone still tells after compaction).  Each record
carries what its writer knows, and readers merge them, so the API instances
on every host agree without talking to each other.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Callable
from typing import Any

import structlog

from uvrd import messages
from uvrd.config import KafkaConfig
from uvrd.kafka.commit_mode import OutRecord
from uvrd.kafka.topic_view import TopicBoard

# A state never goes back: a late "queued" must not hide "processing".
RANK = {"queued": 0, "processing": 1, "succeeded": 2, "failed": 2, "cancelled": 2, "delivered": 3,
        "delivery_failed": 3, "stems_deleted": 4}
# The task's work is over: a cancellation comes too late.
ENDED = tuple(state for state, rank in RANK.items() if rank >= 2)
STATES = tuple(RANK)
# A stem's name in a result (a custom name, <model>.<stem>, or a stem audio-separator named) is
# longer than this only when forged.
MAX_STEM_NAME_CHARS = 128

log = structlog.get_logger("uvrd.boards.status")


def record(topic: str, task_uuid: str, state: str, **fields) -> OutRecord:
    assert state in RANK, state
    value = {"task_uuid": task_uuid, "state": state, "updated_at": messages.now_iso(),
             **{k: v for k, v in fields.items() if v is not None}}
    return OutRecord(topic, task_uuid.encode(), messages.encode(value))


# What a stems_deleted record does not repeat of the state it ends: the stems are gone, and the
# progress, the step and the writer's time are the earlier records'.
NOT_CARRIED_PAST_DELETION = ("task_uuid", "state", "updated_at", "stems", "progress", "step")


def stems_deleted_record(topic: str, state: dict, deleted_at: str) -> OutRecord:
    """The record that ends a finished task's life early (DELETE /v1/tasks/<uuid>/stems): the task's
    merged *state* without its stems, in state ``stems_deleted`` with ``stems_deleted_at``."""
    fields = {k: v for k, v in state.items() if k not in NOT_CARRIED_PAST_DELETION}
    return record(topic, state["task_uuid"], "stems_deleted", **{**fields, "stems_deleted_at": deleted_at})


def progress_key(task_uuid: str) -> bytes:
    """The key of a task's progress records (bulletin.py says why); '/' is in no task_uuid."""
    return f"{task_uuid}/progress".encode()


def progress_record(topic: str, task_uuid: str, fraction: float, step: str, **fields) -> OutRecord:
    """A running task's state and progress, on the task's progress key; *fields* as record()'s."""
    value = {"task_uuid": task_uuid, "state": "processing", "updated_at": messages.now_iso(),
             "progress": fraction, "step": step, **{k: v for k, v in fields.items() if v is not None}}
    return OutRecord(topic, progress_key(task_uuid), messages.encode(value))


def progress_tombstone(topic: str, task_uuid: str) -> OutRecord:
    return OutRecord(topic, progress_key(task_uuid), None)


# What a replay's new cycle keeps of the one before it; the rest (the error, the stems, the
# delivery) is the earlier cycle's and would mislead.
KEPT_ACROSS_REPLAYS = ("submitted_at", "storage", "key", "filename", "audio_seconds")
# Not final: the task counts against its key's max_active (uvrd/api/quota_gate.py).
ACTIVE = tuple(state for state, rank in RANK.items() if rank < 2)


def merge(current: dict | None, update: dict) -> dict:
    if current is None:
        return dict(update)
    new, old = messages.replay_of(update), messages.replay_of(current)
    if new > old:
        # A replay (uvrd/boards/replays.py) starts the task's next cycle: "queued" again after "failed".
        return {**{k: current[k] for k in KEPT_ACROSS_REPLAYS if k in current}, **update}
    if new < old:
        return {**update, **current}  # a late record of an earlier cycle only fills gaps
    if RANK.get(update.get("state", ""), -1) < RANK.get(current.get("state", ""), -1):
        return {**update, **current}  # a late, older state only fills gaps
    return {**current, **update}


def usable(value: dict[str, Any]) -> dict[str, Any]:
    """*value*, a status record, with only the stems that can be served: a name a link can carry
    and a path or object key that can be opened (an object key is checked again against the
    bucket's rules where it is used).  Whoever can write to the broker can write a
    record, and a NUL byte in a path would raise where the api opens it; such a stem is left out
    (its download answers 404) with a warning."""
    stems = value.get("stems")
    if stems is None:
        return value
    kept = {}
    for name, ref in stems.items() if isinstance(stems, dict) else ():
        if _servable_name(name) and messages.path_problem(ref) is None:
            kept[name] = ref
        else:
            log.warning("status record names a stem that cannot be served; it is left out",
                        task_uuid=_shown(value.get("task_uuid")), stem=_shown(name))
    if not isinstance(stems, dict):
        log.warning("status record's stems are no object; they are left out", task_uuid=_shown(value.get("task_uuid")))
    return {**value, "stems": kept} if kept else {k: v for k, v in value.items() if k != "stems"}


def _shown(value: object) -> str:
    """*value* for a log line: a forged one may hold what no log can write (a lone surrogate)."""
    if isinstance(value, str) and messages.TASK_UUID_RE.fullmatch(value):
        return value
    return ascii(value)[:140]


def _servable_name(name: object) -> bool:
    """A name a link can carry: quote() and the link's signature encode it, and a download names
    its file after it, so no lone surrogate escape and no control character (neither is printable)."""
    return isinstance(name, str) and 0 < len(name) <= MAX_STEM_NAME_CHARS and name.isprintable()


class StatusBoard(TopicBoard):
    """An in-memory view of the status topic, kept current by a background reader."""

    missing_is_empty = False  # the api is not ready until the status of tasks is loaded
    stop_timeout = 5.0

    def __init__(self, kafka_config: KafkaConfig, topic: str):
        super().__init__(kafka_config, topic)
        self._states: dict[str, dict] = {}
        self._by_key: dict[str, set[str]] = {}  # each key's tasks, for its usage

    def usage(self, key: str, day: str) -> tuple[int, float]:
        """Key *key*'s tasks queued or running now, and the audio seconds of its tasks submitted on
        the UTC *day* (``YYYY-MM-DD``); a task whose length is unknown counts 0 here (the api
        records every length it accepts)."""
        active, seconds = 0, 0.0
        with self._lock:
            for task_uuid in self._by_key.get(key, ()):
                value = self._states[task_uuid]
                if value.get("state") in ACTIVE:
                    active += 1
                submitted, length = value.get("submitted_at"), value.get("audio_seconds")
                if isinstance(submitted, str) and submitted.startswith(day) and isinstance(length, (int, float)) \
                        and not isinstance(length, bool) and length > 0:
                    seconds += length
        return active, seconds

    def get(self, task_uuid: str) -> dict | None:
        with self._lock:
            state = self._states.get(task_uuid)
            return dict(state) if state else None

    def newest(self, visible: Callable[[dict], bool], limit: int,
               before: tuple[str, str] | None = None) -> tuple[list[dict], bool]:
        """Up to *limit* of the tasks *visible* lets through, newest submitted first (then by
        task_uuid, so the order is total), after *before* (a ``(submitted_at, task_uuid)`` of a
        previous page); and whether more follow.  Each call walks every task once (keeping only the
        newest limit + 1): tens of milliseconds among a few hundred thousand tasks."""
        with self._lock:
            candidates = ((str(v.get("submitted_at") or ""), uuid) for uuid, v in self._states.items() if visible(v))
            top = heapq.nlargest(limit + 1, (c for c in candidates if before is None or c < before))
            chosen = [dict(self._states[uuid]) for _, uuid in top[:limit]]
        return chosen, len(top) > limit

    def apply(self, value: dict) -> None:
        """Fold in a state this process wrote itself, before the reader sees it come back."""
        value = usable(value)
        with self._lock:
            self._put(value["task_uuid"], value)

    def fold(self, rec) -> None:
        raw = rec.value
        try:
            value = json.loads(raw)
            task_uuid = value["task_uuid"]
        except (TypeError, ValueError, KeyError):
            return  # not ours to judge; the status topic is written only by uvrd
        value = usable(value)
        with self._lock:
            self._put(task_uuid, value)

    def _put(self, task_uuid: str, value: dict) -> None:
        """Under the lock: merge *value* into the task's state, and keep the index by key."""
        before = self._states.get(task_uuid)
        merged = self._states[task_uuid] = merge(before, value)
        old, new = (before or {}).get("key"), merged.get("key")
        if old != new and isinstance(old, str):
            self._by_key.get(old, set()).discard(task_uuid)
        if isinstance(new, str):
            self._by_key.setdefault(new, set()).add(task_uuid)
