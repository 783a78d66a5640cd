"""What a daemon commits for an outcome: the one place results and their records are built.

Pure functions of the record and how its work ended.  For the processor: the result (for the
uploader), the task's status record, for a failure a dead-letter copy of the task, and for a task
whose cancellation was requested the request's tombstone.  For the
uploader: the status record of a delivery and, if it was given up, a dead-letter copy of the result.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from uvrd import messages
from uvrd.config import TopicsConfig
from uvrd.kafka import cancellations, status
from uvrd.kafka.commit_mode import OutRecord, dead_letter
from uvrd.outcomes import Cancelled, Delivered, Failed, GaveUp, Rejected, Succeeded


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
    if replay := (task.replay if task is not None else outcome.replay):
        result["replay"] = replay
    task_uuid = result["task_uuid"]
    key = task_uuid.encode() if task_uuid else record.key
    out = [OutRecord(topics.results, key, messages.encode(result))]
    if task_uuid:
        state = _STATES[type(outcome)]
        fields = {k: result.get(k) for k in ("submitted_at", "started_at", "finished_at", "error_message",
                                             "stems", "storage", "cancel_requested_at", "replay")}
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


def _result(outcome: Succeeded | Failed | Rejected, task: messages.Task | None, storage: str) -> dict:
    match outcome:
        case Succeeded(stems=stems, model=model, started_at=started_at):
            return messages.success_result(task, stems, model, storage=storage, submitted_at=task.submitted_at,
                                           started_at=started_at)
        case Failed(error=error, started_at=started_at):
            return messages.failure_result(task.task_uuid, task.hook_url, error, submitted_at=task.submitted_at,
                                           started_at=started_at)
        case Cancelled(requested_at=requested_at, started_at=started_at):
            return messages.cancelled_result(task, requested_at, submitted_at=task.submitted_at, started_at=started_at)
        case Rejected(error=error, task_uuid=task_uuid, hook_url=hook_url, submitted_at=submitted_at):
            return messages.failure_result(task_uuid, hook_url, error, submitted_at=submitted_at)
    raise TypeError(f"no result for {outcome!r}")


# -- the uploader's -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Settled:
    """A result's part of the uploader's commit: its records, and what to log once they are in."""

    records: tuple[OutRecord, ...]
    event: str
    level: str = "info"
    fields: dict = field(default_factory=dict)


def delivery_settlement(topics: TopicsConfig, record, task_uuid: str, outcome: Delivered | GaveUp,
                        replay: int = 0) -> Settled:
    """A delivered webhook's status; a given-up one's dead letter and status.  *replay*: the result's
    replay number, which its status records carry (status.merge) and its log fields name."""
    settled = _delivery_settlement(topics, record, task_uuid, outcome, replay or None)
    return replace(settled, fields={**settled.fields, "replay": replay}) if replay else settled


def _delivery_settlement(topics: TopicsConfig, record, task_uuid: str, outcome: Delivered | GaveUp,
                         replay: int | None) -> Settled:
    match outcome:
        case Delivered(attempts=attempts, status=http_status):
            return Settled(
                (status.record(topics.status, task_uuid, "delivered", delivered_at=messages.now_iso(),
                               delivery_attempts=attempts, replay=replay),),
                "webhook delivered", "info", {"task_uuid": task_uuid, "attempts": attempts, "http_status": http_status})
        case GaveUp(attempts=attempts, reason=reason):
            error = f"webhook delivery failed: {reason}"
            return Settled(
                (dead_letter(topics.dead_letter, record, error, "uploader"),
                 status.record(topics.status, task_uuid, "delivery_failed", delivery_error=error,
                               delivery_attempts=attempts, replay=replay)),
                "webhook dead-lettered", "warning", {"task_uuid": task_uuid, "attempts": attempts, "reason": reason})
    raise TypeError(f"no settlement for {outcome!r}")


def rejected_result(topics: TopicsConfig, record, error: str) -> Settled:
    """A result message the uploader cannot read: dead-lettered as it is."""
    return Settled((dead_letter(topics.dead_letter, record, error, "uploader"),), "result rejected", "warning",
                   {"error": error, "offset": record.offset})
