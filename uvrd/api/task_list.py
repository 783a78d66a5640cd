"""GET /v1/tasks: the caller's tasks, newest first, a page at a time (an operator's: every task,
or with ``key``, one key's).

From this worker's status board, as GET /v1/tasks/<uuid> answers each; a task that expired or whose
stems were deleted (410 on its own) is left out.  A page ends with ``next``
when more follow: pass it back as ``before`` for the next page.  The cursor is the last task's
``(submitted_at, task_uuid)``, so a page stays put while new tasks arrive above it.
"""

from __future__ import annotations

import base64
import binascii
import json

from flask import Blueprint, jsonify, request

from uvrd.api import query
from uvrd.api.context import current
from uvrd.api.errors import ApiError

blueprint = Blueprint("task_list", __name__)

DEFAULT_LIMIT = 50
MAX_LIMIT = 200


@blueprint.get("/v1/tasks")
def list_tasks():
    api = current()
    caller = api.auth.require_bearer(request.headers)
    limit = _limit(request.args.get("limit"))
    before = _cursor(request.args.get("before"))
    only = request.args.get("key")  # one key's tasks (what the web page's own list shows)

    def listed(state: dict) -> bool:  # an expired or deleted task answers 410: it is not listed
        owner = state.get("key")
        return caller.owns(owner) and (only is None or owner == only) and query.gone(api, state) is None
    states, more = api.backend.board.newest(listed, limit, before)
    tasks = [query.describe(api, state["task_uuid"], state) for state in states]
    last = states[-1] if states else None
    cursor = _encode(str(last.get("submitted_at") or ""), last["task_uuid"]) if more and last else None
    return jsonify(tasks=tasks, next=cursor)


def _limit(value: str | None) -> int:
    if value is None:
        return DEFAULT_LIMIT
    if not value.isascii() or not value.isdigit() or not 1 <= int(value) <= MAX_LIMIT:
        raise ApiError(400, f"limit must be an integer from 1 to {MAX_LIMIT}")
    return int(value)


def _encode(submitted_at: str, task_uuid: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([submitted_at, task_uuid]).encode()).decode().rstrip("=")


def _cursor(value: str | None) -> tuple[str, str] | None:
    if not value:
        return None
    try:
        decoded = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
    except (binascii.Error, ValueError):
        decoded = None
    if not (isinstance(decoded, list) and len(decoded) == 2 and all(isinstance(v, str) for v in decoded)):
        raise ApiError(400, "before must be the 'next' of a previous page")
    return decoded[0], decoded[1]
