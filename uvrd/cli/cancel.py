"""``uvrd cancel UUID…``: ask the API to cancel tasks (``DELETE /v1/tasks/<uuid>``).

The API address and token come as for ``uvrd submit``.  A queued task is skipped when a processor
reaches it; a running one stops within seconds.  Exit status: 0 when every cancellation was
recorded, 1 when a task had already ended or is unknown, 2 when the API could not be reached or
refused the request.
"""

from __future__ import annotations

import sys

from uvrd.cli.endpoint import add_endpoint_arguments, client
from uvrd.client.api_client import Conflict, NotFound, Refused, Unreachable


def add_arguments(parser) -> None:
    parser.add_argument("task_uuid", nargs="+", help="the task(s) to cancel")
    add_endpoint_arguments(parser)


def run(args) -> int:
    api = client(args)
    worst = 0
    for task_uuid in args.task_uuid:
        try:
            body = api.cancel(task_uuid)
        except (NotFound, Conflict) as e:
            print(f"uvrd cancel: {task_uuid}: {e.error}", file=sys.stderr)
            worst = max(worst, 1)
        except (Refused, Unreachable) as e:
            print(f"uvrd cancel: {task_uuid}: {e}", file=sys.stderr)
            worst = 2
        else:
            print(f"task {task_uuid}: cancellation requested at {body['cancel_requested_at']} (it was {body['state']})")
    return worst
