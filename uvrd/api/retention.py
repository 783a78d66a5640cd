"""DELETE /v1/tasks/<uuid>/stems: delete a finished task's stems and input now, rather than at its
expires_at.

The deletion is first a record on the status topic (state ``stems_deleted``, with
``stems_deleted_at`` and the rest of the task's state, boards/status.py), so every api of the
deployment answers 410 for the task once its reader folds it in, and this one at once.  Then this
api deletes the files where the deployment keeps them (the bucket, or this host's spool and output
directories, which the local backend shares between api and processor); whatever it could not
delete, the uploader's sweep deletes, as the record says the task's files are done with.
"""

from __future__ import annotations

import json

import structlog
from flask import Blueprint, jsonify, request

from uvrd import messages
from uvrd.api.context import current
from uvrd.api.errors import ApiError
from uvrd.api.query import lookup
from uvrd.api.recording import record_or_refuse
from uvrd.boards import status
from uvrd.storage import StorageError

log = structlog.get_logger("uvrd.api")

blueprint = Blueprint("retention", __name__)

# The states in which a task's work is over, so its stems are final (status.ENDED less stems_deleted,
# which answers 410 before this is asked).
FINISHED = tuple(s for s in status.ENDED if s != "stems_deleted")


@blueprint.delete("/v1/tasks/<task_uuid>/stems")
def delete_stems(task_uuid: str):
    api = current()
    state = lookup(api, task_uuid, api.auth.require_bearer(request.headers))  # 404 not the caller's, 410 gone
    if state.get("state") not in FINISHED:
        raise ApiError(409, f"task {task_uuid} has not finished ({state.get('state')}); cancel it first, "
                            "or delete its stems once it has finished")
    deleted_at = messages.now_iso()
    record = status.stems_deleted_record(api.config.topics.status, state, deleted_at)
    assert record.value is not None
    record_or_refuse(api.backend, record, "the stems' deletion", "nothing was deleted; ")
    api.backend.board.apply(json.loads(record.value))
    try:
        removed = api.storage.delete_task_files(task_uuid)
    except (StorageError, OSError) as e:
        # Recorded: every api answers 410 now, and the uploader's sweep deletes what is left.
        log.warning("stems deletion recorded, files left to the sweep", error=str(e))
        removed = None
    log.info("stems deleted", files_removed=removed)
    return jsonify(task_uuid=task_uuid, state="stems_deleted", stems_deleted_at=deleted_at,
                   files_deleted=removed is not None)
