"""``Idempotency-Key`` on POST /v1/tasks (one file, a URL, or a batch): a repeat is answered, not queued.

A repeat of a submission (the same key, the same header, within 24 hours) answers its tasks with
200 and queues nothing; the same header with another request (fields, or any file's content or
name) answers 422.  The record of a submission (uvrd/boards/idempotency.py) is committed in one
Kafka transaction with its tasks and their ``queued`` status, so whichever api a repeat reaches
finds the tasks, or none were made.

Two requests with the same header at once, on any workers of any apis: each opens a transactional
producer whose id is made from (key, header).  ``init_transactions`` fences the other's transaction
if it is still open (its commit then fails: that request answers 409 and queues nothing), or waits
until it is settled; the worker then reads the record topic up to its end as it is now
(read_committed), so a submission committed before is found and answered.  Only then are the
files spooled and the transaction committed.  One of them makes the tasks; the other answers them
(200) or 409, never a second set.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

import kafka.errors as Errors
import structlog
from flask import jsonify

from uvrd import messages
from uvrd.api import fields, queueing
from uvrd.api.backend import Unavailable
from uvrd.api.context import ApiContext
from uvrd.api.errors import ApiError
from uvrd.boards import idempotency as records
from uvrd.boards import status
from uvrd.boards.idempotency import HEADER, Submission, TaskRef
from uvrd.kafka import clients
from uvrd.kafka.commit_mode import PRODUCER_BOUNDS, ExactlyOnce, Fenced, OutRecord, Unanswered
from uvrd.metrics import api as api_metrics
from uvrd.outcomes import NotQueued, Produced, Queued, Unconfirmed

log = structlog.get_logger("uvrd.api")

# How long a request waits for its worker's reader to reach the record topic's end.
CATCH_UP_S = 10.0
RETRY_AFTER_S = "1"


def header(headers) -> str | None:
    try:
        return records.check_value(headers.get(HEADER))
    except records.BadIdempotencyKey as e:
        raise ApiError(400, str(e)) from None


def json_hash(body: dict) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(b"json\n" + canonical.encode()).hexdigest()


def form_hash(form, files: list[tuple[str | None, IO[bytes]]]) -> str:
    """The form's fields (every value, in order per name) and each file's name and content."""
    described = {"fields": sorted((k, form.getlist(k)) for k in form),
                 "files": [[name, _content_hash(stream)] for name, stream in files]}
    return hashlib.sha256(b"form\n" + json.dumps(described, separators=(",", ":")).encode()).hexdigest()


def _content_hash(stream: IO[bytes]) -> str:
    digest = hashlib.sha256()
    stream.seek(0)
    while chunk := stream.read(1 << 20):
        digest.update(chunk)
    stream.seek(0)
    return digest.hexdigest()


class Repeat(Exception):
    """The submission was made before: answer it (already built)."""

    def __init__(self, response):
        super().__init__("a repeat")
        self.response = response


def repeat_answer(api: ApiContext, found: Submission | None, request_hash: str):
    """The answer to a repeat of *found* (200), 422 when the request differs; None when there is none."""
    if found is None:
        return None
    if found.request_hash != request_hash:
        raise ApiError(422, f"this {HEADER} was used by this key for a different request within the last 24 "
                            "hours; use a new key for a new request")
    structlog.contextvars.bind_contextvars(task_uuids=[t.task_uuid for t in found.tasks], idempotent_repeat=True)
    entries = []
    for task in found.tasks:
        state = (api.backend.board.get(task.task_uuid) or {}).get("state", "queued")
        entries.append({"task_uuid": task.task_uuid, "state": state,
                        "status_url": queueing.status_url(api, task.task_uuid), "filename": task.filename})
    if found.batch:
        return jsonify(tasks=entries)
    entry = {k: v for k, v in entries[0].items() if k != "filename"}
    response = jsonify(**entry)
    response.headers["Location"] = entry["status_url"]
    return response


def check_repeat(api: ApiContext, caller: str, value: str, request_hash: str) -> None:
    """Raise Repeat (or 422) when this worker already knows the submission: no fencing needed."""
    response = repeat_answer(api, api.backend.idempotency.get(caller, value), request_hash)
    if response is not None:
        raise Repeat(response)


class Fence:
    """One idempotent submission's transaction, opened before anything is spooled."""

    def __init__(self, api: ApiContext, caller: str, value: str, request_hash: str, mode: ExactlyOnce):
        self.api, self.caller, self.value, self.request_hash, self.mode = api, caller, value, request_hash, mode

    def commit(self, stored: list[queueing.Stored], submission: fields.Submission, batch: bool) -> list[Produced]:
        """Every task, its queued status and the submission's record in one transaction: all
        queued, or none (409 when another request with the header fenced this one).  A commit
        whose end goes unanswered is settled by a successor producer and the record topic says
        which; only when Kafka answers neither are they all unconfirmed (a repeat of the request
        then says which)."""
        api, submitted_at = self.api, messages.now_iso()
        topic = api.config.topics.task_topic(submission.priority)
        out: list[OutRecord] = []
        statuses: list[OutRecord] = []
        for item in stored:
            out.append(OutRecord(topic, item.task_uuid.encode(),
                                 messages.encode(queueing.task_record(api, item, submission, submitted_at))))
            statuses.append(status.record(api.config.topics.status, item.task_uuid, "queued",
                                          **queueing.queued_fields(api, item, submission, submitted_at)))
        made = Submission(self.caller, self.value, self.request_hash, submitted_at,
                          tuple(TaskRef(item.task_uuid, item.filename) for item in stored), batch)
        producer = self.mode.producer
        try:
            self.mode.commit(out + statuses + [made.record(api.config.topics.idempotency)], {})
        except (Unanswered, Errors.KafkaTimeoutError) as e:
            # The end of the transaction went unanswered: kafka-python may leave a step so once the
            # broker fenced the producer, or the broker is away.  A successor settles it either way.
            last = producer._transaction_manager.last_error if producer is not None else None
            landed, fenced_now = self._settle(made)
            if landed is None:
                log.error("tasks may not be queued: Kafka did not answer the commit", error=str(e) or type(e).__name__)
                return [api_metrics.count(Unconfirmed(item.task_uuid)) for item in stored]
            if not landed:
                self._discard(stored)
                if fenced_now or (last is not None and _fenced(last)):
                    raise ApiError(409, f"another request with this {HEADER} is under way; send it again to get "
                                        "its answer", {"Retry-After": RETRY_AFTER_S}) from None
                log.error("tasks not queued: the commit went unanswered and did not land", error=str(e))
                return [api_metrics.count(NotQueued(item.task_uuid)) for item in stored]
            log.info("the commit went unanswered and had landed")
        except Fenced:
            self._discard(stored)
            raise ApiError(409, f"another request with this {HEADER} is under way; send it again to get its "
                                "answer", {"Retry-After": RETRY_AFTER_S}) from None
        except Errors.KafkaError as e:
            self._discard(stored)
            if _fenced(e):  # kafka-python reports a fencing met mid-transaction as the send's error
                raise ApiError(409, f"another request with this {HEADER} is under way; send it again to get its "
                                    "answer", {"Retry-After": RETRY_AFTER_S}) from None
            log.error("tasks not queued: Kafka did not take them", error=str(e) or type(e).__name__)
            return [api_metrics.count(NotQueued(item.task_uuid)) for item in stored]
        for item, record in zip(stored, statuses):
            queueing.log_queued(api, item, submission, topic)
            api.backend.board.apply(json.loads(record.value or b"{}"))
        api.backend.idempotency.note(made)
        return [api_metrics.count(Queued(item.task_uuid)) for item in stored]

    def _settle(self, made: Submission) -> tuple[bool | None, bool]:
        """Whether the transaction whose end went unanswered landed (None: Kafka does not say), and
        whether another request fenced this one meanwhile.  A successor producer of the same id
        finishes or aborts it (init_transactions; or another request's did), then the record
        topic, read to its end, holds the submission's record or not."""
        fenced_now = False
        try:
            self.mode.close(timeout=0)
            self.mode.open()
        except Fenced:
            fenced_now = True  # another request's init settled it
        except Errors.KafkaError:
            return None, False
        try:
            ends = self.api.backend.end_offsets(self.api.config.topics.idempotency)
        except Unavailable:
            return None, fenced_now
        board = self.api.backend.idempotency
        if not board.wait_reached(ends, CATCH_UP_S):
            return None, fenced_now
        found = board.get(self.caller, self.value)
        landed = found is not None and [t.task_uuid for t in found.tasks] == [t.task_uuid for t in made.tasks]
        return landed, fenced_now

    def _discard(self, stored: list[queueing.Stored]) -> None:
        for item in stored:
            self.api.storage.discard_input(item.ref)


_FENCED = (Errors.ProducerFencedError, Errors.InvalidProducerEpochError)


def _fenced(e: BaseException) -> bool:
    """Whether *e* is, or carries, the broker's word that another producer of the id fenced this one."""
    return isinstance(e, _FENCED) or any(isinstance(a, _FENCED) for a in e.args) or \
        isinstance(e.__cause__, _FENCED) or "ProducerFenced" in str(e)


@contextmanager
def fenced(api: ApiContext, caller: str, value: str, request_hash: str) -> Iterator[Fence]:
    """The fence of (caller, value): raises Repeat (or 422) if a submission committed before it is
    found once every earlier transaction of the pair is settled, 409 if another request fences this
    one first, 503 if Kafka does not answer."""
    key = records.record_key(caller, value)
    kafka = api.config.kafka
    mode = ExactlyOnce(lambda: clients.producer(kafka, f"{kafka.client_id}-idempotency-{key[:40]}",
                                                **PRODUCER_BOUNDS), None)  # type: ignore[arg-type]
    try:
        try:
            mode.open()
            ends = api.backend.end_offsets(api.config.topics.idempotency)
        except Fenced:
            raise ApiError(409, f"another request with this {HEADER} is under way; send it again to get its answer",
                           {"Retry-After": RETRY_AFTER_S}) from None
        except (Errors.KafkaError, Unavailable) as e:
            raise ApiError(503, f"Kafka did not answer ({e or type(e).__name__}); nothing was queued",
                           {"Retry-After": queueing.RETRY_AFTER_S}) from None
        if not api.backend.idempotency.wait_reached(ends, CATCH_UP_S):
            raise ApiError(503, "the record of idempotent submissions could not be read up to date; nothing was "
                                "queued", {"Retry-After": queueing.RETRY_AFTER_S})
        check_repeat(api, caller, value, request_hash)
        yield Fence(api, caller, value, request_hash, mode)
    finally:
        mode.close(timeout=1.0)
