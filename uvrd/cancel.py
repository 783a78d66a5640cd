"""``uvrd cancel UUID…``: ask the API to cancel tasks (``DELETE /v1/tasks/<uuid>``).

The API address and token come as for ``uvrd submit``.  A queued task is skipped when a processor
reaches it; a running one stops within seconds.  Exit status: 0 when every cancellation was
recorded, 1 when a task had already ended or is unknown, 2 when the API could not be reached or
refused the request.
"""

from __future__ import annotations

import sys

import requests

from uvrd.submit import add_endpoint_arguments, auth, endpoint, error_of


def add_arguments(parser) -> None:
    parser.add_argument("task_uuid", nargs="+", help="the task(s) to cancel")
    add_endpoint_arguments(parser)


def run(args) -> int:
    api, token = endpoint(args)
    worst = 0
    for task_uuid in args.task_uuid:
        try:
            response = requests.delete(f"{api.rstrip('/')}/v1/tasks/{task_uuid}", headers=auth(token), timeout=30)
        except requests.RequestException as e:
            print(f"uvrd cancel: {task_uuid}: the API did not answer: {e}", file=sys.stderr)
            worst = 2
            continue
        if response.status_code == 202:
            body = response.json()
            print(f"task {task_uuid}: cancellation requested at {body['cancel_requested_at']} (it was {body['state']})")
        elif response.status_code in (404, 409):
            print(f"uvrd cancel: {task_uuid}: {error_of(response)}", file=sys.stderr)
            worst = max(worst, 1)
        else:
            print(f"uvrd cancel: {task_uuid}: HTTP {response.status_code}: {error_of(response)}", file=sys.stderr)
            worst = 2
    return worst
