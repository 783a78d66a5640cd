"""How a piece of work ended, as typed values: every outcome a daemon acts on is declared here.

A handler returns one of these; the code that commits (or does not) matches on its type.  No
dicts, no flags.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Abandoned:
    """Work given up by the daemon's own choice (a stop, a lost partition): left uncommitted for redelivery."""

    reason: str
    cause: str = "stop"  # one word for the metrics (uvrd/metrics): stop, or rebalance (the partition went)


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
    cause: str = "attempts_exhausted"  # one word for the metrics (uvrd/metrics): refused, unsafe_url...


DeliveryOutcome = Delivered | GaveUp | Abandoned


# -- a task in the processor ------------------------------------------------------------------
@dataclass(frozen=True)
class Rejected:
    """A task message the processor cannot run (unreadable, an unknown model, another storage)."""

    error: str
    task_uuid: str | None = None
    hook_url: str | None = None
    submitted_at: str | None = None
    cause: str = "unreadable"  # one word for the metrics (uvrd/metrics): unknown_model, other_storage...
    replay: int = 0  # the message's replay number, when it parsed that far


@dataclass(frozen=True)
class Succeeded:
    """Separated, and every stem stored."""

    stems: dict  # stem name -> its reference in the storage
    model: str
    started_at: str
    seconds: float | None = None  # the separation's own time in the engine


@dataclass(frozen=True)
class Failed:
    """The task ran (or tried to) and will not succeed: a failure result and a dead letter."""

    error: str
    started_at: str | None = None
    cause: str = "separation"  # one word for the metrics (uvrd/metrics): input_fetch, stems_store...


@dataclass(frozen=True)
class Cancelled:
    """Stopped, or never started, because a cancellation was requested: one final result, no dead letter."""

    requested_at: str
    started_at: str | None = None


TaskOutcome = Succeeded | Failed | Cancelled | Abandoned


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


# -- a dead letter's replay (uvrd/kafka/replays.py) ----------------------------------------------
@dataclass(frozen=True)
class Replayed:
    """A dead letter sent again (uvrd/kafka/replays.py): its record is queued once more."""

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
