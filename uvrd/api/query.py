"""GET /v1/tasks/<uuid> and its stem downloads, from this worker's status board (and its view of
the cancellations asked for).

The processor records stems as absolute paths on its host; clients only ever
see signed links, and a download serves a file only from inside the output
directory, whatever path a status record names.

Every answer carries ``expires_at``: the task's finished_at plus api.result_retention, null until it
finishes.  From then on (or once its stems were deleted on request) the task and its stem links
answer 410, with a sentence saying when; another key's task still answers 404.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import structlog
from flask import Blueprint, jsonify, redirect, request, send_file

from uvrd.storage import links, retention
from uvrd.api.context import ApiContext, current
from uvrd.api.errors import ApiError
from uvrd.keys.record import Caller
from uvrd.messages import TASK_UUID_RE
from uvrd.runtime.deadline import Deadline

blueprint = Blueprint("query", __name__)

# What a status answer may show: never the processor's paths or host names.
PUBLIC_FIELDS = ("task_uuid", "state", "outcome", "progress", "step", "priority", "model", "submitted_at",
                 "started_at", "finished_at", "cancel_requested_at", "delivered_at", "error_message", "replay",
                 "replayed_at", "key", "filename")
# A task this worker does not know may have been accepted a moment ago by another worker or api:
# the worker reads the status topic through its end (at most this long) before it answers 404, and
# answers 503 if it could not, never a 404 for a task that was accepted.  A worker that has just
# started waits the same way for the whole topic.
READ_THROUGH_S = 5.0
RETRY_AFTER_S = "5"


@blueprint.get("/v1/tasks/<task_uuid>")
def task_status(task_uuid: str):
    api = current()
    state = lookup(api, task_uuid, api.auth.require_bearer(request.headers))
    return jsonify(describe(api, task_uuid, state))


def describe(api: ApiContext, task_uuid: str, state: dict) -> dict:
    """A task's answer (GET /v1/tasks/<uuid>, and each of GET /v1/tasks)."""
    if "cancel_requested_at" not in state and (asked := api.backend.cancellations.requested_at(task_uuid)):
        state["cancel_requested_at"] = asked  # asked, and not settled yet
    body = {name: state[name] for name in PUBLIC_FIELDS if state.get(name) is not None}
    expiry = retention.expires_at(state, api.config.api.result_retention)
    body["expires_at"] = retention.iso(expiry) if expiry is not None else None
    stems = _stems(state)
    cfg = api.config.api
    if stems and _in_bucket(api, state):
        # A presigned bucket URL lasts no longer than the task: the bucket cannot be told it expired.
        # (This api's own links can: past expires_at they answer 410.)
        left = max(1.0, expiry.timestamp() - now()) if expiry is not None else None
        body["stems"] = {name: api.storage.link(task_uuid, name, key, ttl=left) for name, key in stems.items()}
    elif stems:
        body["stems"] = {name: links.stem_url(cfg.public_url, cfg.link_secret, task_uuid, name, cfg.link_ttl)
                         for name in stems}
    return body


def now() -> float:
    """The clock expiry is judged by."""
    return time.time()


def gone(api: ApiContext, state: dict) -> retention.Gone | None:
    """Whether the task answers 410: it expired, or its stems were deleted on request."""
    return retention.gone(state, api.config.api.result_retention, now())


@blueprint.get("/v1/tasks/<task_uuid>/stems/<stem>")
def stem_file(task_uuid: str, stem: str):
    api = current()
    caller = api.auth.require_stem_access(request.headers, request.args, task_uuid, stem)
    state = lookup(api, task_uuid, caller)
    path = _stems(state).get(stem)
    if path is None:
        raise ApiError(404, f"task {task_uuid} has no stem {stem!r}")
    if _in_bucket(api, state):
        # The bucket serves the bytes; this link only hands out a fresh presigned URL.
        return redirect(api.storage.link(task_uuid, stem, path), 302)
    output = os.path.realpath(api.config.processor.output_dir)
    real = os.path.realpath(path)
    if not Path(real).is_relative_to(output) or real == output or not os.path.isfile(real):
        structlog.get_logger("uvrd.api").warning("stem path refused", stem=stem, path=path)
        raise ApiError(404, f"the stem {stem!r} of task {task_uuid} is not available")
    return send_file(real, as_attachment=True, download_name=f"{task_uuid}_{stem}{Path(real).suffix}",
                     conditional=True)


def lookup(api: ApiContext, task_uuid: str, caller: Caller | None) -> dict:
    """The task's merged status: 404 for a task this deployment does not know, or that is not
    *caller*'s (the same answer, so that another key's task cannot be told from none; None: a
    signed link, which is its own permission), 503 while this worker cannot tell (the status topic
    is still loading, or could not be read through its end)."""
    if not TASK_UUID_RE.fullmatch(task_uuid):
        raise ApiError(404, f"no task {task_uuid}")
    structlog.contextvars.bind_contextvars(task_uuid=task_uuid)
    board = api.backend.board
    state = board.get(task_uuid)
    if state is None:
        # The 202 of a submission comes once its "queued" record is acknowledged (queueing.py), so
        # once this worker has read the topic through its end of now, it knows every accepted task.
        caught_up = board.read_through_end(Deadline.after(READ_THROUGH_S))
        state = board.get(task_uuid)
        if state is None and not caught_up:
            loading = "is still loading" if not board.caught_up else "could not be read from Kafka in time"
            raise ApiError(503, f"the status of tasks {loading}; retry shortly", {"Retry-After": RETRY_AFTER_S})
    # Another key's task is, to this caller, no task at all.
    if state is None or (caller is not None and not caller.owns(state.get("key"))):
        raise ApiError(404, f"no task {task_uuid}")
    if (ended := gone(api, state)) is not None:
        raise ApiError(410, ended.sentence(task_uuid), details={ended.reason_field: ended.at_iso})
    return state


def _in_bucket(api: ApiContext, state: dict) -> bool:
    """Stems recorded as object keys of this API's bucket; keys it would not hand out are refused."""
    if state.get("storage") != "s3":
        return False
    if api.storage.name != "s3" or any(api.storage.ref_problem(k) for k in _stems(state).values()):
        structlog.get_logger("uvrd.api").warning("stem keys refused", storage=api.storage.name)
        raise ApiError(404, f"the stems of task {state.get('task_uuid')} are not available from this server")
    return True


def _stems(state: dict) -> dict[str, str]:
    stems = state.get("stems")
    if not isinstance(stems, dict):
        return {}
    return {name: path for name, path in stems.items() if isinstance(name, str) and isinstance(path, str)}
