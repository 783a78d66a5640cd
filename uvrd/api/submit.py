"""POST /v1/tasks and the old service's POST /generate: audio in, task to Kafka.

Cheap checks come first (auth, fields, the hook URL) so that a refused
request costs no download; the task is answered 202 only once the broker
has acknowledged it, and a task the broker did not take leaves no file.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import structlog
from flask import Blueprint, jsonify, request

from uvrd import messages
from uvrd.api import fields
from uvrd.api.backend import Unavailable
from uvrd.api.context import ApiContext, current
from uvrd.api.errors import ApiError
from uvrd.kafka.commit_mode import OutRecord
from uvrd.storage import StorageError

log = structlog.get_logger("uvrd.api")

blueprint = Blueprint("submit", __name__)

RETRY_AFTER_S = "5"
# A URL submission is a few short fields; audio itself comes as a form upload.
MAX_JSON_BYTES = 64 * 1024


@blueprint.post("/v1/tasks")
def create_task():
    api = current()
    api.auth.require_bearer(request.headers)
    if request.mimetype == "multipart/form-data":
        return _accept_upload(api)
    if request.is_json:
        return _accept_url(api, _json_object())
    raise ApiError(415, "send multipart/form-data with an 'audio' file, or application/json with an 'audio' URL")


@blueprint.post("/generate")
def generate():
    api = current()
    api.auth.require_basic(request.headers)
    if not request.is_json:
        raise ApiError(415, "send application/json with an 'audio' URL")
    return _accept_url(api, _json_object())


def _json_object() -> dict:
    raw = _read_at_most(request.stream, MAX_JSON_BYTES + 1)
    if len(raw) > MAX_JSON_BYTES:
        raise ApiError(413, f"the JSON body is over {MAX_JSON_BYTES} bytes (upload the audio as a form instead)")
    try:
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


def _submission(api: ApiContext, values, form: bool) -> fields.Submission:
    return fields.parse(values, api.config.processor.models, api.config.api.allow_private_urls, form,
                        api.config.processor.output_format)


def _accept_upload(api: ApiContext):
    upload = request.files.get("audio")  # parses the body: 413 from here when it is over the limit
    submission = _submission(api, request.form, form=True)
    if upload is None:
        raise ApiError(400, "the form has no file field 'audio'")
    task_uuid = _new_task_uuid()
    return _queue(api, task_uuid, api.spool.keep(upload.stream, task_uuid), submission)


def _accept_url(api: ApiContext, body: dict):
    submission = _submission(api, body, form=False)
    url = fields.url_field(body.get("audio"), "audio")
    task_uuid = _new_task_uuid()
    path = api.spool.fetch(url, task_uuid, api.config.api.allow_private_urls, api.config.api.fetch_timeout)
    return _queue(api, task_uuid, path, submission)


def _new_task_uuid() -> str:
    task_uuid = str(uuid.uuid4())
    structlog.contextvars.bind_contextvars(task_uuid=task_uuid)
    return task_uuid


def _queue(api: ApiContext, task_uuid: str, audio: Path, submission: fields.Submission):
    size = audio.stat().st_size  # now: once queued, the processor may take and remove the file at any moment
    storage = api.storage
    try:
        ref = storage.put_input(audio, audio.name)
    except StorageError as e:
        log.error("task not queued: the store did not take its audio", error=str(e))
        raise ApiError(503, "the audio store is unavailable and nothing was queued; retry later",
                       {"Retry-After": RETRY_AFTER_S}) from None
    submitted_at = messages.now_iso()
    ref_field = "audio_key" if storage.name == "s3" else "audio_path"
    task = {"task_uuid": task_uuid, "storage": storage.name, ref_field: ref, "hook_url": submission.hook_url,
            "priority": submission.priority, "submitted_at": submitted_at}
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
    topic = api.config.topics.task_topic(submission.priority)
    try:
        api.backend.send_and_wait(OutRecord(topic, task_uuid.encode(), messages.encode(task)))
    except Unavailable as e:
        if e.ambiguous:
            # Keep the audio: if the task did land, it must still find its file (retention sweeps it otherwise).
            log.error("task may not be queued: Kafka did not acknowledge it", topic=topic, error=str(e))
            raise ApiError(503, f"Kafka did not confirm task {task_uuid}; it may still run: check "
                           f"{_status_url(api, task_uuid)} before submitting again",
                           {"Retry-After": RETRY_AFTER_S}) from None
        storage.discard_input(ref)
        log.error("task not queued: Kafka did not take it", topic=topic, error=str(e))
        raise ApiError(503, "the task queue is unavailable and nothing was queued; retry later",
                       {"Retry-After": RETRY_AFTER_S}) from None
    log.info("task queued", topic=topic, priority=submission.priority, storage=storage.name, **{ref_field: ref},
             audio_bytes=size)
    api.backend.publish_status(task_uuid, "queued", submitted_at=submitted_at, priority=submission.priority,
                               model=submission.plan.label if submission.plan is not None else
                               submission.model or api.config.processor.model)
    status_url = _status_url(api, task_uuid)
    response = jsonify(task_uuid=task_uuid, state="queued", status_url=status_url)
    response.status_code = 202
    response.headers["Location"] = status_url
    return response


def _status_url(api: ApiContext, task_uuid: str) -> str:
    return f"{api.config.api.public_url.rstrip('/')}/v1/tasks/{task_uuid}"
