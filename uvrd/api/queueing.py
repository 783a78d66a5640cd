"""One task from its spooled audio to Kafka: store the input, produce the task, say how that went.

Shared by a single submission (uvrd/api/submit.py) and a batch (uvrd/api/batch.py).  Producing
ends in a value, not an exception, because a batch goes on to report every file's fate after one
fails; a single submission turns the value into its answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from uvrd import messages
from uvrd.api import fields
from uvrd.api.backend import Unavailable
from uvrd.api.context import ApiContext
from uvrd.api.errors import ApiError
from uvrd.kafka.commit_mode import OutRecord
from uvrd.metrics import api as api_metrics
from uvrd.outcomes import NotQueued, Produced, Queued, Unconfirmed
from uvrd.storage import StorageError

log = structlog.get_logger("uvrd.api")

RETRY_AFTER_S = "5"


@dataclass(frozen=True)
class Stored:
    """A task's checked input, in the store, its task not yet produced."""

    task_uuid: str
    ref: str  # what the task names its input by: a spool path, or an object key
    size: int
    filename: str | None = None  # as the client named the upload (its status shows it), if it did
    audio_seconds: float | None = None  # what the input counts against its key's day (uvrd/api/quotas.py)


def store(api: ApiContext, task_uuid: str, audio: Path, filename: str | None = None,
          audio_seconds: float | None = None) -> Stored:
    """Hand the spooled *audio* to the store; a 503 (nothing queued) when the store fails."""
    size = audio.stat().st_size  # now: once queued, the processor may take and remove the file at any moment
    try:
        return Stored(task_uuid, api.storage.put_input(audio, audio.name), size, filename, audio_seconds)
    except StorageError as e:
        log.error("task not queued: the store did not take its audio", task_uuid=task_uuid, error=str(e))
        raise ApiError(503, "the audio store is unavailable and nothing was queued; retry later",
                       {"Retry-After": RETRY_AFTER_S}) from None


@api_metrics.counted
def produce(api: ApiContext, stored: Stored, submission: fields.Submission) -> Produced:
    """Produce the task and wait for Kafka's acknowledgement; drop its input if Kafka surely did not take it."""
    submitted_at = messages.now_iso()
    topic = api.config.topics.task_topic(submission.priority)
    task = task_record(api, stored, submission, submitted_at)
    try:
        api.backend.send_and_wait(OutRecord(topic, stored.task_uuid.encode(), messages.encode(task)))
    except Unavailable as e:
        return _not_taken(api, stored, topic, e)
    log_queued(api, stored, submission, topic)
    # Acknowledged before the 202 goes: a GET or DELETE right after it, at any api worker, then
    # finds the task (query.lookup).  The task itself is queued whatever happens to this record, so
    # a failure here is logged and still a 202: the processor's own status records follow.
    api.backend.record_status(stored.task_uuid, "queued", **queued_fields(api, stored, submission, submitted_at))
    return Queued(stored.task_uuid)


def log_queued(api: ApiContext, stored: Stored, submission: fields.Submission, topic: str) -> None:
    log.info("task queued", task_uuid=stored.task_uuid, topic=topic, priority=submission.priority,
             storage=api.storage.name, **{_ref_field(api): stored.ref}, audio_bytes=stored.size,
             audio_seconds=stored.audio_seconds)


def queued_fields(api: ApiContext, stored: Stored, submission: fields.Submission, submitted_at: str) -> dict:
    """What a task's ``queued`` status record holds, besides its state."""
    return dict(submitted_at=submitted_at, priority=submission.priority, key=submission.key,
                filename=stored.filename, audio_seconds=stored.audio_seconds,
                model=submission.plan.label if submission.plan is not None else
                submission.model or api.config.processor.model)


def task_record(api: ApiContext, stored: Stored, submission: fields.Submission, submitted_at: str) -> dict:
    task: dict[str, Any] = {"task_uuid": stored.task_uuid, "storage": api.storage.name, _ref_field(api): stored.ref,
            "hook_url": submission.hook_url, "priority": submission.priority, "submitted_at": submitted_at}
    if submission.model:
        task["model"] = submission.model
    if submission.output_format:
        task["output_format"] = submission.output_format
    if submission.options.values:
        task["options"] = submission.options.as_dict()
    if submission.plan is not None:
        task.update(submission.plan.to_json())
    if submission.events:
        task["events"] = list(submission.events)
    if submission.key:
        task["key"] = submission.key
    if stored.audio_seconds is not None:
        task["audio_seconds"] = stored.audio_seconds  # its key's turns at the processor (key_turns.py)
    return task


def _ref_field(api: ApiContext) -> str:
    return "audio_key" if api.storage.name == "s3" else "audio_path"


def _not_taken(api: ApiContext, stored: Stored, topic: str, e: Unavailable) -> Produced:
    if e.ambiguous:
        # Keep the audio: if the task did land, it must still find its file (retention sweeps it otherwise).
        log.error("task may not be queued: Kafka did not acknowledge it", task_uuid=stored.task_uuid, topic=topic,
                  error=str(e))
        return Unconfirmed(stored.task_uuid)
    api.storage.discard_input(stored.ref)
    log.error("task not queued: Kafka did not take it", task_uuid=stored.task_uuid, topic=topic, error=str(e))
    return NotQueued(stored.task_uuid)


@api_metrics.counted
def never_sent(api: ApiContext, stored: Stored) -> NotQueued:
    """A batch's task left unsent after an earlier one failed: its input goes."""
    api.storage.discard_input(stored.ref)
    return NotQueued(stored.task_uuid)


def status_url(api: ApiContext, task_uuid: str) -> str:
    return f"{api.config.api.public_url.rstrip('/')}/v1/tasks/{task_uuid}"
