"""Idempotent submissions: which tasks a key's ``Idempotency-Key`` made, kept in Kafka.

A compacted topic keyed by a hash of (the caller's key name, the header's value): one record per
submission, written in the same Kafka transaction as the submission's tasks and their ``queued``
status (uvrd/api/idempotency.py), so a record exists exactly when its tasks do.  Every api worker
reads it whole, as it reads the status topic, and answers a repeat from what it holds.

A record says who asked (``caller``), the header (``idempotency_key``), a hash of what was asked
(``request_hash``: the fields and each file's content, so a repeat with another body is told
apart), when (``submitted_at``), and the tasks made, in the order of the files.  A repeat counts
within :data:`WINDOW_S` (24 hours) of ``submitted_at``; an older record is as good as none, and the
next submission with the same header replaces it.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from kafka.consumer.fetcher import ConsumerRecord

from uvrd import messages
from uvrd.config import KafkaConfig
from uvrd.kafka.commit_mode import OutRecord
from uvrd.kafka.topic_view import TopicBoard

WINDOW_S = 24 * 3600
# The header's value: 1-255 printable ASCII characters (space to tilde).
HEADER = "Idempotency-Key"
VALUE_RE = re.compile(r"[\x20-\x7e]{1,255}")


class BadIdempotencyKey(ValueError):
    """The header's value breaks the rule; the sentence says how."""


def check_value(value: str | None) -> str | None:
    """The header's value, or None when the request has none; BadIdempotencyKey if it is malformed."""
    if value is None:
        return None
    if not VALUE_RE.fullmatch(value) or not value.strip():
        raise BadIdempotencyKey(f"the {HEADER} header must be 1-255 printable ASCII characters (and not only spaces)")
    return value


def record_key(caller: str, value: str) -> str:
    """The topic's key for *caller*'s header *value*: a hash, so a value's characters never matter."""
    return hashlib.sha256(json.dumps([caller, value]).encode()).hexdigest()


@dataclass(frozen=True)
class TaskRef:
    task_uuid: str
    filename: str | None = None


@dataclass(frozen=True)
class Submission:
    """One idempotent submission: who, with which header, what it asked (a hash), and its tasks."""

    caller: str
    value: str
    request_hash: str
    submitted_at: str
    tasks: tuple[TaskRef, ...]
    batch: bool = False  # answered as a batch ({"tasks": [...]}) rather than one task

    @property
    def key(self) -> str:
        return record_key(self.caller, self.value)

    def fresh(self, now: datetime | None = None) -> bool:
        """Still within the window: a repeat answers it."""
        try:
            at = datetime.fromisoformat(self.submitted_at)
        except ValueError:
            return False
        if at.tzinfo is None:
            return False
        return (now or datetime.now(UTC)) - at < timedelta(seconds=WINDOW_S)

    def record(self, topic: str) -> OutRecord:
        value = {"caller": self.caller, "idempotency_key": self.value, "request_hash": self.request_hash,
                 "submitted_at": self.submitted_at, "batch": self.batch,
                 "tasks": [{"task_uuid": t.task_uuid, "filename": t.filename} for t in self.tasks]}
        return OutRecord(topic, self.key.encode(), messages.encode(value))


def parse(value: bytes | None) -> Submission | None:
    """A record of the topic; None for anything else (the topic is uvrd's alone)."""
    if (data := messages.json_object(value)) is None:
        return None
    caller, header, digest, at, tasks = (data.get(k) for k in ("caller", "idempotency_key", "request_hash",
                                                                 "submitted_at", "tasks"))
    if not all(isinstance(v, str) for v in (caller, header, digest, at)) or not isinstance(tasks, list) or not tasks:
        return None
    refs = []
    for task in tasks:
        task_uuid = task.get("task_uuid") if isinstance(task, dict) else None
        if not isinstance(task_uuid, str) or not messages.TASK_UUID_RE.fullmatch(task_uuid):
            return None
        filename = task.get("filename")
        refs.append(TaskRef(task_uuid, filename if isinstance(filename, str) else None))
    return Submission(caller, header, digest, at, tuple(refs), data.get("batch") is True)  # type: ignore[arg-type]


class IdempotencyBoard(TopicBoard):
    """Every idempotent submission, by its record key.  A deployment that has not created the topic
    yet has none: a submission with the header then answers 503 (its write needs the topic)."""

    def __init__(self, kafka_config: KafkaConfig, topic: str):
        super().__init__(kafka_config, topic)
        self._submissions: dict[str, Submission] = {}

    def get(self, caller: str, value: str) -> Submission | None:
        """*caller*'s submission with header *value*, if one is within the window."""
        with self._lock:
            found = self._submissions.get(record_key(caller, value))
        if found is None or found.caller != caller or found.value != value or not found.fresh():
            return None
        return found

    def note(self, submission: Submission) -> None:
        """A submission this worker committed itself, before the reader sees it come back."""
        with self._lock:
            self._submissions[submission.key] = submission

    def fold(self, rec: ConsumerRecord) -> None:
        try:
            key = rec.key.decode()
        except (AttributeError, UnicodeDecodeError):
            return
        with self._lock:
            if rec.value is None:
                self._submissions.pop(key, None)
                return
            found = parse(rec.value)
            if found is not None and found.key == key and found.fresh():
                self._submissions[key] = found
            elif found is not None:
                self._submissions.pop(key, None)  # past the window: as good as none, and no memory kept
