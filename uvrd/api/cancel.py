"""DELETE /v1/tasks/<uuid>: ask for a task to be cancelled.

The request is a record in the cancellations topic (boards/cancellations.py), so it holds whichever
api instance took it and whichever processor has the task, across restarts.  A queued task is
settled as cancelled when a processor reaches it; a running one is stopped within seconds.  Either
way the task ends once, in ``cancelled`` (with one webhook if it has a hook), unless it ended
before the processor saw the request: the answer is 202 because the outcome is the processor's to
say, and the status shows it.  A task that has already ended is a 409.
"""

from __future__ import annotations

import structlog
from flask import Blueprint, jsonify, request

from uvrd.api.context import current
from uvrd.api.errors import ApiError
from uvrd.api.query import lookup
from uvrd.api.recording import record_or_refuse
from uvrd.boards import cancellations, status

log = structlog.get_logger("uvrd.api")

blueprint = Blueprint("cancel", __name__)


@blueprint.delete("/v1/tasks/<task_uuid>")
def cancel_task(task_uuid: str):
    api = current()
    state = lookup(api, task_uuid, api.auth.require_bearer(request.headers))
    if state.get("state") in status.ENDED:
        ended = state.get("outcome") or state["state"]
        raise ApiError(409, f"task {task_uuid} has already ended ({ended}); there is nothing to cancel")
    view = api.backend.cancellations
    asked = view.requested_at(task_uuid)
    if asked is None:
        record, asked = cancellations.request(api.config.topics.cancellations, task_uuid)
        record_or_refuse(api.backend, record, "the cancellation")
        view.note(task_uuid, asked)
        log.info("cancellation requested", state=state.get("state"))
    response = jsonify(task_uuid=task_uuid, state=state.get("state"), cancel_requested_at=asked,
                       status_url=f"{api.config.api.public_url.rstrip('/')}/v1/tasks/{task_uuid}")
    response.status_code = 202
    return response
