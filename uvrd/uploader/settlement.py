"""What the uploader commits for a result: the status record of its delivery and, if the delivery was
given up, a dead-letter copy of the result; a result it cannot read, dead-lettered as it is.  Pure
functions of the record and how the delivery ended."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from uvrd import messages
from uvrd.boards import status
from uvrd.config import TopicsConfig
from uvrd.kafka.commit_mode import OutRecord, dead_letter
from uvrd.outcomes import Delivered, GaveUp


@dataclass(frozen=True)
class Settled:
    """A result's part of the uploader's commit: its records, and what to log once they are in."""

    records: tuple[OutRecord, ...]
    event: str
    level: str = "info"
    fields: dict = field(default_factory=dict)


# What a delivery's status record repeats of the result, so that it alone (the last record of the
# task's key, all a compacted topic keeps) still says whose the task is and when it finished, which
# its expiry counts from.
CARRIED_FROM_RESULT = ("key", "submitted_at", "finished_at")


def delivery_settlement(topics: TopicsConfig, record, task_uuid: str, outcome: Delivered | GaveUp,
                        replay: int = 0, result: dict | None = None) -> Settled:
    """A delivered webhook's status; a given-up one's dead letter and status.  *replay*: the result's
    replay number, which its status records carry (status.merge) and its log fields name.  *result*:
    the delivered result, whose CARRIED_FROM_RESULT the status record repeats."""
    carried = {k: v for k in CARRIED_FROM_RESULT if isinstance(v := (result or {}).get(k), str)}
    settled = _delivery_settlement(topics, record, task_uuid, outcome, replay or None, carried)
    return replace(settled, fields={**settled.fields, "replay": replay}) if replay else settled


def _delivery_settlement(topics: TopicsConfig, record, task_uuid: str, outcome: Delivered | GaveUp,
                         replay: int | None, carried: dict) -> Settled:
    match outcome:
        case Delivered(attempts=attempts, status=http_status):
            return Settled(
                (status.record(topics.status, task_uuid, "delivered", delivered_at=messages.now_iso(),
                               delivery_attempts=attempts, replay=replay, **carried),),
                "webhook delivered", "info", {"task_uuid": task_uuid, "attempts": attempts, "http_status": http_status})
        case GaveUp(attempts=attempts, reason=reason):
            error = f"webhook delivery failed: {reason}"
            return Settled(
                (dead_letter(topics.dead_letter, record, error, "uploader"),
                 status.record(topics.status, task_uuid, "delivery_failed", delivery_error=error,
                               delivery_attempts=attempts, replay=replay, **carried)),
                "webhook dead-lettered", "warning", {"task_uuid": task_uuid, "attempts": attempts, "reason": reason})
    raise TypeError(f"no settlement for {outcome!r}")


def rejected_result(topics: TopicsConfig, record, error: str) -> Settled:
    """A result message the uploader cannot read: dead-lettered as it is."""
    return Settled((dead_letter(topics.dead_letter, record, error, "uploader"),), "result rejected", "warning",
                   {"error": error, "offset": record.offset})
