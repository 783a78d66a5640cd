"""POST /v1/tasks and the old service's POST /generate: audio in, task to Kafka.

Cheap checks come first (auth, fields, the hook URL) so that a refused
request costs no download; the task is answered 202 only once the broker
has acknowledged it, and a task the broker did not take leaves no file.
A form with several ``audio`` files is a batch, one task per file (uvrd/api/batch.py).

Every file is checked (empty, too large, not audio) and its length read before anything is
spooled; then an ``Idempotency-Key`` repeat is answered (uvrd/api/idempotency.py), and the key's
quotas admit or refuse the request as a whole (uvrd/api/quota_gate.py).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from functools import partial
from pathlib import Path

import structlog
from flask import Blueprint, jsonify, request

from uvrd.api import batch, fields, fleet, idempotency, queueing
from uvrd.api.context import ApiContext, current
from uvrd.api.errors import ApiError
from uvrd.api.forms import AUDIO_FIELD
from uvrd.api.quota_gate import counted_seconds
from uvrd.outcomes import NotQueued, Produced, Queued, Unconfirmed

blueprint = Blueprint("submit", __name__)

# A URL submission is a few short fields; audio itself comes as a form upload.
MAX_JSON_BYTES = 64 * 1024


@blueprint.post("/v1/tasks")
def create_task():
    api = current()
    owner = api.auth.require_bearer(request.headers).name
    key = idempotency.header(request.headers)
    try:
        if request.mimetype == "multipart/form-data":
            return _accept_upload(api, owner, key)
        if request.is_json:
            return _accept_url(api, json_object(), owner, key)
    except idempotency.Repeat as repeat:
        return repeat.response
    raise ApiError(415, "send multipart/form-data with one or more 'audio' files, or application/json with an "
                        "'audio' URL")


@blueprint.post("/generate")
def generate():
    api = current()
    api.auth.require_basic(request.headers)
    if not request.is_json:
        raise ApiError(415, "send application/json with an 'audio' URL")
    return _accept_url(api, json_object(), None)  # no key: only operators see these tasks


def json_object() -> dict:
    raw = _read_at_most(request.stream, MAX_JSON_BYTES + 1)
    if len(raw) > MAX_JSON_BYTES:
        raise ApiError(413, f"the JSON body is over {MAX_JSON_BYTES} bytes (upload the audio as a form instead)")
    try:
        # NaN, Infinity and 1e309 are read too, though JSON has no such numbers: each field's check
        # refuses them with a 400 that names the field (uvrd/json_numbers.py), which a refusal here
        # of the whole body could not.
        body = json.loads(raw)
    except RecursionError:  # json's C scanner recurses once per level of nesting
        raise ApiError(400, "the body is not valid JSON: it is nested too deeply") from None
    except ValueError:  # malformed, not UTF-8, or an integer too long to convert
        raise ApiError(400, "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the JSON body must be an object")
    return body


def _read_at_most(stream, limit: int) -> bytes:
    chunks, size = [], 0
    while size < limit:
        chunk = stream.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _submission(api: ApiContext, values, form: bool, owner: str | None) -> fields.Submission:
    submission = replace(fields.parse(values, api.config.processor.models, api.config.api.allow_private_urls, form,
                                      api.config.processor.output_format), key=owner)
    workers = api.backend.workers.workers() if submission.options.get("stem_names") else []
    fields.check_stem_names(submission, api.config.processor.model, partial(fleet.reported_stems, workers))
    return submission


@contextmanager
def _guarded(api: ApiContext, owner: str | None, key: str | None,
             request_hash: Callable[[], str]) -> Iterator[idempotency.Fence | None]:
    """Without an Idempotency-Key, nothing; with one, a repeat answered (idempotency.Repeat) or
    the fence its tasks are committed through."""
    if key is None or owner is None:
        yield None
        return
    digest = request_hash()
    idempotency.check_repeat(api, owner, key, digest)
    with idempotency.fenced(api, owner, key, digest) as fence:
        yield fence


def _accept_upload(api: ApiContext, owner: str, key: str | None = None):
    uploads = request.files.getlist(AUDIO_FIELD)  # parses the body: 413 from here when it is over the limit
    submission = _submission(api, request.form, True, owner)
    if not uploads:
        raise ApiError(400, f"the form has no file field {AUDIO_FIELD!r}")
    if len(uploads) > 1:
        parts, extensions = batch.check(api, uploads)
    else:
        filename = uploads[0].filename[:batch.MAX_FILENAME_CHARS] if uploads[0].filename else None
        parts, extensions = [batch.Part(0, filename, uploads[0].stream)], [api.spool.check(uploads[0].stream)]
    with _guarded(api, owner, key, lambda: idempotency.form_hash(request.form, [(p.filename, p.stream) for p in parts])) \
            as fence:
        seconds = [counted_seconds(p.stream.name, api.config.processor.max_audio_seconds) for p in parts]
        with api.quotas.admit(api.backend, owner, len(parts), sum(seconds)):
            if len(parts) > 1:
                return batch.queue(api, parts, extensions, seconds, submission, fence)
            task_uuid = _new_task_uuid()
            path = api.spool.link(parts[0].stream, task_uuid, extensions[0])
            return _queue(api, task_uuid, path, submission, parts[0].filename, seconds[0], fence)


def _accept_url(api: ApiContext, body: dict, owner: str | None, key: str | None = None):
    submission = _submission(api, body, False, owner)
    url = fields.url_field(body.get("audio"), "audio")
    with _guarded(api, owner, key, lambda: idempotency.json_hash(body)) as fence:
        with api.quotas.admit(api.backend, owner, 1, 0.0):
            pass  # a key at its max_active is refused before the download
        with api.spool.fetched(url, api.config.api.allow_private_urls, api.config.api.fetch_timeout) as (tmp, ext):
            seconds = counted_seconds(tmp.name, api.config.processor.max_audio_seconds)
            with api.quotas.admit(api.backend, owner, 1, seconds):
                task_uuid = _new_task_uuid()
                return _queue(api, task_uuid, api.spool.link(tmp, task_uuid, ext), submission, None, seconds, fence)


def _new_task_uuid() -> str:
    task_uuid = str(uuid.uuid4())
    structlog.contextvars.bind_contextvars(task_uuid=task_uuid)
    return task_uuid


def _queue(api: ApiContext, task_uuid: str, audio: Path, submission: fields.Submission,
           filename: str | None = None, audio_seconds: float | None = None,
           fence: idempotency.Fence | None = None):
    """One task: 202 once Kafka has it, else a 503 that says whether it may still run."""
    stored = queueing.store(api, task_uuid, audio, filename, audio_seconds)
    outcome: Produced = queueing.produce(api, stored, submission) if fence is None else \
        fence.commit([stored], submission, batch=False)[0]
    match outcome:
        case Queued():
            status_url = queueing.status_url(api, task_uuid)
            response = jsonify(task_uuid=task_uuid, state="queued", status_url=status_url)
            response.status_code = 202
            response.headers["Location"] = status_url
            return response
        case Unconfirmed():
            raise ApiError(503, f"Kafka did not confirm task {task_uuid}; it may still run: check "
                           f"{queueing.status_url(api, task_uuid)} before submitting again",
                           {"Retry-After": queueing.RETRY_AFTER_S})
        case NotQueued():
            raise ApiError(503, "the task queue is unavailable and nothing was queued; retry later",
                           {"Retry-After": queueing.RETRY_AFTER_S})
