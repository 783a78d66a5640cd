"""Where each task stands, kept in Kafka: no database.

A compacted topic keyed by task_uuid.  Every component appends the task's
state as it moves it (api: queued; processor: processing and its progress, as
reports on the key ``<task_uuid>/progress``, then succeeded, failed or
cancelled in the same transaction as the result; uploader: delivered or
delivery_failed, in the same transaction as its offset).  Each record
carries what its writer knows, and readers merge them, so the API instances
on every host agree without talking to each other.
"""

from __future__ import annotations

import json

from uvrd import messages
from uvrd.config import KafkaConfig
from uvrd.kafka.commit_mode import OutRecord
from uvrd.kafka.topic_view import TopicBoard

# A state never goes back: a late "queued" must not hide "processing".
RANK = {"queued": 0, "processing": 1, "succeeded": 2, "failed": 2, "cancelled": 2, "delivered": 3,
        "delivery_failed": 3}
# The task's work is over: a cancellation comes too late.
ENDED = tuple(state for state, rank in RANK.items() if rank >= 2)
STATES = tuple(RANK)


def record(topic: str, task_uuid: str, state: str, **fields) -> OutRecord:
    assert state in RANK, state
    value = {"task_uuid": task_uuid, "state": state, "updated_at": messages.now_iso(),
             **{k: v for k, v in fields.items() if v is not None}}
    return OutRecord(topic, task_uuid.encode(), messages.encode(value))


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
KEPT_ACROSS_REPLAYS = ("submitted_at", "storage")


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


class StatusBoard(TopicBoard):
    """An in-memory view of the status topic, kept current by a background reader."""

    missing_is_empty = False  # the api is not ready until the status of tasks is loaded
    stop_timeout = 5.0

    def __init__(self, kafka_config: KafkaConfig, topic: str):
        super().__init__(kafka_config, topic)
        self._states: dict[str, dict] = {}

    def get(self, task_uuid: str) -> dict | None:
        with self._lock:
            state = self._states.get(task_uuid)
            return dict(state) if state else None

    def apply(self, value: dict) -> None:
        """Fold in a state this process wrote itself, before the reader sees it come back."""
        with self._lock:
            self._states[value["task_uuid"]] = merge(self._states.get(value["task_uuid"]), value)

    def fold(self, rec) -> None:
        raw = rec.value
        try:
            value = json.loads(raw)
            task_uuid = value["task_uuid"]
        except (TypeError, ValueError, KeyError):
            return  # not ours to judge; the status topic is written only by uvrd
        with self._lock:
            self._states[task_uuid] = merge(self._states.get(task_uuid), value)
