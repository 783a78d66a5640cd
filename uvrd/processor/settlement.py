"""What the processor commits for a task's outcome: the one place results and their records are built.

A pure function of the record and how its work ended: the result (for the uploader), the task's
status record, for a failure a dead-letter copy of the task, and for a task whose cancellation was
requested the request's tombstone.
"""

from __future__ import annotations

from dataclasses import dataclass

from uvrd import messages
from uvrd.config import TopicsConfig
from uvrd.boards import cancellations, status
from uvrd.kafka.commit_mode import OutRecord, dead_letter
from uvrd.outcomes import Cancelled, Failed, Rejected, Succeeded


@dataclass(frozen=True)
class Settlement:
    records: tuple[OutRecord, ...]
    task_uuid: str | None
    result: dict  # as committed: the log line quotes it


def settlement(topics: TopicsConfig, record, outcome: Succeeded | Failed | Cancelled | Rejected,
               task: messages.Task | None, storage: str, cancel_requested_at: str | None = None) -> Settlement:
    """The records to commit with *record*'s offset; *task* is None for a Rejected message.
    *cancel_requested_at*: a cancellation was requested (whatever the outcome, it is settled now)."""
    result = _result(outcome, task, storage)
    if replay := (task.replay if task is not None else outcome.replay if isinstance(outcome, Rejected) else 0):
        result["replay"] = replay
    if task is not None and task.key:
        result["key"] = task.key  # who submitted it: its status and its webhook say so
    task_uuid = result["task_uuid"]
    key = task_uuid.encode() if task_uuid else record.key
    out = [OutRecord(topics.results, key, messages.encode(result))]
    if task_uuid:
        state = _STATES[type(outcome)]
        fields = {k: result.get(k) for k in ("submitted_at", "started_at", "finished_at", "error_message",
                                             "stems", "storage", "cancel_requested_at", "replay", "key")}
        if isinstance(outcome, Succeeded):
            fields["progress"] = 1.0
        out.append(status.record(topics.status, task_uuid, state, outcome=state, **fields))
        out.append(status.progress_tombstone(topics.status, task_uuid))
        if cancel_requested_at is not None or isinstance(outcome, Cancelled):
            out.append(cancellations.tombstone(topics.cancellations, task_uuid))
    if isinstance(outcome, Failed | Rejected):
        out.append(dead_letter(topics.dead_letter, record, outcome.error, "processor"))
    return Settlement(tuple(out), task_uuid, result)


_STATES = {Succeeded: "succeeded", Failed: "failed", Rejected: "failed", Cancelled: "cancelled"}


def _result(outcome: Succeeded | Failed | Cancelled | Rejected, task: messages.Task | None, storage: str) -> dict:
    if isinstance(outcome, Rejected):  # the one outcome without a task: a message that could not be read as one
        return messages.failure_result(outcome.task_uuid, outcome.hook_url, outcome.error,
                                       submitted_at=outcome.submitted_at)
    if task is None:
        raise TypeError(f"{type(outcome).__name__} without its task")
    match outcome:
        case Succeeded(stems=stems, model=model, started_at=started_at):
            return messages.success_result(task, stems, model, storage=storage, submitted_at=task.submitted_at,
                                           started_at=started_at)
        case Failed(error=error, started_at=started_at):
            return messages.failure_result(task.task_uuid, task.hook_url, error, submitted_at=task.submitted_at,
                                           started_at=started_at)
        case Cancelled(requested_at=requested_at, started_at=started_at):
            return messages.cancelled_result(task, requested_at, submitted_at=task.submitted_at, started_at=started_at)
    raise TypeError(f"no result for {outcome!r}")
