"""Several ``audio`` files in one multipart request: one task per file, sharing the request's fields.

Nothing is half-accepted for a bad file: every file is checked (empty, over the limit, not audio)
before any is named, stored or queued, and one refused file refuses the whole request with the
status a single upload would get, naming the file's index and filename.

Kafka then takes the tasks one after another, in the order of the files, each acknowledged before
the next is sent, so the answer is 202 only once every task is queued.  The api's producer is not
transactional (every request of a worker shares it, status records included), so a batch cannot be
queued all or nothing.  If Kafka fails one task, those before it stay queued and will run, that one
is unconfirmed (it may have landed: its audio is kept) or not queued, and those after it are never
sent; a 503 lists every file's fate, so a client resubmits only the files that were not queued.
A batch sent with an ``Idempotency-Key`` is the exception: its tasks go in one transaction with the
submission's record (uvrd/api/idempotency.py), all queued or none.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from collections.abc import Sequence

import structlog
from flask import jsonify
from werkzeug.datastructures import FileStorage

from uvrd.api import fields, queueing
from uvrd.api.context import ApiContext
from uvrd.api.errors import ApiError
from uvrd.api.forms import AUDIO_FIELD
from uvrd.api.idempotency import Fence
from uvrd.api.queueing import Stored
from uvrd.outcomes import NotQueued, Produced, Queued, Unconfirmed
from uvrd.api.spooler import Spool

# A client's file name goes back to it in answers, cut to what a file system allows.
MAX_FILENAME_CHARS = 255


@dataclass(frozen=True)
class Part:
    """One ``audio`` file of the form."""

    index: int  # among the form's audio files, from 0, in the order sent
    filename: str | None  # as the client named it (cut to MAX_FILENAME_CHARS), not where it is kept
    stream: IO[bytes]  # the spool's temporary file


@dataclass(frozen=True)
class Spooled:
    part: Part
    task_uuid: str
    path: Path


def check(api: ApiContext, uploads: Sequence[FileStorage]) -> tuple[list[Part], list[str]]:
    """Every file checked, before any is named, stored or queued: the parts and their extensions."""
    parts = [Part(i, filename(upload), upload.stream) for i, upload in enumerate(uploads)]
    return parts, [_check(api.spool, part) for part in parts]


def queue(api: ApiContext, parts: list[Part], extensions: list[str], seconds: Sequence[float | None],
          submission: fields.Submission, fence: Fence | None = None):
    """The checked (and admitted) files spooled, stored and queued: one by one, or, through an
    Idempotency-Key's *fence*, all in one transaction."""
    spooled = _spool(api.spool, parts, extensions)
    stored = _store(api, spooled, seconds)
    outcomes = _produce(api, stored, submission) if fence is None else fence.commit(stored, submission, batch=True)
    return _answer(api, parts, outcomes)


def filename(upload: FileStorage) -> str | None:
    return upload.filename[:MAX_FILENAME_CHARS] if upload.filename is not None else None


def _check(spool: Spool, part: Part) -> str:
    try:
        return spool.check(part.stream)
    except ApiError as e:
        raise ApiError(e.status, f"the {AUDIO_FIELD!r} file at index {part.index} ({part.filename!r}) is refused: "
                                 f"{e.message}; nothing in this request was queued", e.headers,
                       {"part": {"index": part.index, "filename": part.filename}}) from None


def _spool(spool: Spool, parts: list[Part], extensions: list[str]) -> list[Spooled]:
    """Every checked file under its task's name; none if one cannot be named."""
    spooled: list[Spooled] = []
    try:
        for part, extension in zip(parts, extensions):
            task_uuid = str(uuid.uuid4())
            spooled.append(Spooled(part, task_uuid, spool.link(part.stream, task_uuid, extension)))
    except BaseException:
        for item in spooled:
            item.path.unlink(missing_ok=True)
        raise
    structlog.contextvars.bind_contextvars(task_uuids=[item.task_uuid for item in spooled])
    return spooled


def _store(api: ApiContext, spooled: list[Spooled], seconds: Sequence[float | None]) -> list[Stored]:
    """Every input in the store; none if the store fails one (the 503 says nothing was queued)."""
    stored: list[Stored] = []
    try:
        for item, length in zip(spooled, seconds):
            stored.append(queueing.store(api, item.task_uuid, item.path, item.part.filename, length))
    except BaseException:
        for done in stored:
            api.storage.discard_input(done.ref)
        for item in spooled[len(stored):]:
            item.path.unlink(missing_ok=True)
        raise
    return stored


def _produce(api: ApiContext, stored: list[Stored], submission: fields.Submission) -> list[Produced]:
    """Each task in turn, until Kafka fails one: the ones after it are not sent, and their inputs go."""
    outcomes: list[Produced] = []
    for item in stored:
        if outcomes and not isinstance(outcomes[-1], Queued):
            outcomes.append(queueing.never_sent(api, item))
        else:
            outcomes.append(queueing.produce(api, item, submission))
    return outcomes


def _answer(api: ApiContext, parts: list[Part], outcomes: list[Produced]):
    tasks = [_entry(api, part, outcome) for part, outcome in zip(parts, outcomes)]
    if all(isinstance(outcome, Queued) for outcome in outcomes):
        response = jsonify(tasks=tasks)
        response.status_code = 202
        return response
    raise ApiError(503, _failure(outcomes), {"Retry-After": queueing.RETRY_AFTER_S}, {"tasks": tasks})


def _entry(api: ApiContext, part: Part, outcome: Produced) -> dict:
    """One file's fate, in the answer's ``tasks``: a task that is or may be queued with its status URL."""
    match outcome:
        case Queued(task_uuid):
            return _task_entry(api, task_uuid, "queued", part)
        case Unconfirmed(task_uuid):
            return _task_entry(api, task_uuid, "unconfirmed", part)
        case NotQueued():
            return {"state": "not_queued", "filename": part.filename}


def _task_entry(api: ApiContext, task_uuid: str, state: str, part: Part) -> dict:
    return {"task_uuid": task_uuid, "state": state, "status_url": queueing.status_url(api, task_uuid),
            "filename": part.filename}


def _failure(outcomes: list[Produced]) -> str:
    queued = sum(isinstance(o, Queued) for o in outcomes)
    unconfirmed = sum(isinstance(o, Unconfirmed) for o in outcomes)
    if not queued and not unconfirmed:
        return "the task queue is unavailable and nothing was queued; retry later"
    said = [f"{queued} of {len(outcomes)} files are queued and will run"] if queued else []
    if unconfirmed:
        said.append(f"{unconfirmed} unconfirmed (it may still run: check its status_url before submitting it again)")
    said.append(f"{len(outcomes) - queued - unconfirmed} not queued")
    return f"Kafka did not take every task of this request: {', '.join(said)}; 'tasks' says which file is which"
