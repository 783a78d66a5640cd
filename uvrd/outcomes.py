"""How a piece of work ended, as typed values: every outcome a daemon acts on is declared here.

A handler returns one of these; the code that commits (or does not) matches on its type.  No
dicts, no flags.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# Each outcome's cause is one word for the metrics (uvrd/metrics: the ``reason`` label, and the
# dashboards that select on it): declared here, so that a new cause is a change to this file.
AbandonCause = Literal["stop", "rebalance"]
GaveUpCause = Literal["attempts_exhausted", "refused", "unsafe_url", "unbuildable", "internal"]
RejectCause = Literal["unreadable", "plan", "unknown_model", "unknown_output_format", "options", "other_storage",
                      "bad_input_ref"]
FailureCause = Literal["separation", "input_fetch", "worker_killed", "stems_store", "workdir", "disk_full",
                       "runs_exhausted", "unusable_audio", "options"]


@dataclass(frozen=True)
class Abandoned:
    """Work given up by the daemon's own choice (a stop, a lost partition): left uncommitted for redelivery."""

    reason: str
    cause: AbandonCause = "stop"  # rebalance: the partition went


@dataclass(frozen=True)
class Retry:
    """A run that did not finish (the engine died or hung): the same task may run again."""

    reason: str


@dataclass(frozen=True)
class Delivered:
    """A webhook the receiver took (2xx)."""

    attempts: int
    status: int


@dataclass(frozen=True)
class GaveUp:
    """A webhook that will not be delivered: dead-lettered with *reason*."""

    attempts: int
    reason: str
    cause: GaveUpCause = "attempts_exhausted"


DeliveryOutcome = Delivered | GaveUp | Abandoned


# -- a task in the processor ------------------------------------------------------------------
@dataclass(frozen=True)
class Rejected:
    """A task message the processor cannot run (unreadable, an unknown model, another storage)."""

    error: str
    task_uuid: str | None = None
    hook_url: str | None = None
    submitted_at: str | None = None
    cause: RejectCause = "unreadable"
    replay: int = 0  # the message's replay number, when it parsed that far


@dataclass(frozen=True)
class Succeeded:
    """Separated, and every stem stored."""

    stems: dict[str, str]  # stem name -> its reference in the storage
    model: str
    started_at: str
    seconds: float | None = None  # the separation's own time in the engine


@dataclass(frozen=True)
class Failed:
    """The task ran (or tried to) and will not succeed: a failure result and a dead letter."""

    error: str
    started_at: str | None = None
    cause: FailureCause = "separation"


@dataclass(frozen=True)
class Cancelled:
    """Stopped, or never started, because a cancellation was requested: one final result, no dead letter."""

    requested_at: str
    started_at: str | None = None


TaskOutcome = Succeeded | Failed | Cancelled | Abandoned


# -- a finished separation's stems in the storage (uvrd/processor/daemon.py) -------------------
@dataclass(frozen=True)
class Stored:
    """Every stem is in the storage: the success can be committed."""

    refs: dict[str, str]  # stem name -> its reference in the storage


@dataclass(frozen=True)
class StoreFailed:
    """The store kept failing for longer than a job may take: the task fails (stems_store)."""

    error: str


StoreOutcome = Stored | StoreFailed | Abandoned


# -- a commit under a claim (uvrd/kafka/group_member.py) ---------------------------------------
@dataclass(frozen=True)
class Committed:
    """The records and the offset went in together: the work is settled."""


@dataclass(frozen=True)
class NotCommitted:
    """Nothing went in; the record is left for redelivery.  *why*: partition_lost (another member
    owns the partition, and may be redoing the record), or stop_deadline (the stop's deadline
    came first, while the broker kept failing the commit or a rebalance was not over)."""

    why: Literal["partition_lost", "stop_deadline"]


CommitOutcome = Committed | NotCommitted


# -- a task at the api: whether Kafka took it (api/queueing.py) --------------------------------
@dataclass(frozen=True)
class Queued:
    """Kafka acknowledged the task (acks=all): it will run."""

    task_uuid: str


@dataclass(frozen=True)
class Unconfirmed:
    """Sent, but Kafka did not say whether it took it: the task may still run, so its input stays."""

    task_uuid: str


@dataclass(frozen=True)
class NotQueued:
    """Kafka did not take the task, or it was never sent; its input is gone."""

    task_uuid: str


Produced = Queued | Unconfirmed | NotQueued


# -- a dead letter's replay (uvrd/boards/replays.py) ----------------------------------------------
@dataclass(frozen=True)
class Replayed:
    """A dead letter sent again (uvrd/boards/replays.py): its record is queued once more."""

    task_uuid: str
    replay: int
    topic: str  # where the record went back to: a task topic, or the results topic
    stage: str  # the letter's stage: "processor" (the task runs again) or "uploader" (delivered again)


@dataclass(frozen=True)
class AlreadyReplayed:
    """The letter was replayed before: a second replay is refused."""

    replayed_at: str
    replay: int


@dataclass(frozen=True)
class NotReplayable:
    """The letter's record would be refused again, or names nothing uvrd sends again."""

    reason: str


@dataclass(frozen=True)
class ReplayUnconfirmed:
    """The broker did not confirm the transaction (or another replay of the letter fenced it):
    asking again is safe, and answers AlreadyReplayed if this one landed."""

    reason: str


ReplayOutcome = Replayed | AlreadyReplayed | NotReplayable | ReplayUnconfirmed
