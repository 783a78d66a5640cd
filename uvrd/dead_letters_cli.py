"""``uvrd dead-letters list``: what went to the dead-letter topic, newest first, with why (the error),
whence (the record it copies) and the stage that gave up on it, from any api.

The API address and token come as for ``uvrd submit``.  Exit status 0; 2 when the API could not
be reached or refused.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone

import requests

from uvrd.submit import add_endpoint_arguments, auth, endpoint, error_of


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = sub.add_parser("list", help="the latest dead letters, newest first")
    listing.add_argument("--task", help="only this task's")
    listing.add_argument("--error", help="only those whose error holds this text")
    listing.add_argument("--limit", type=int, default=50, help="at most this many (1-1000)")
    listing.add_argument("--json", action="store_true", help="one JSON object, for scripts")
    add_endpoint_arguments(listing)


def run(args) -> int:
    api, token = endpoint(args)
    query = {k: v for k, v in {"task_uuid": args.task, "error": args.error, "limit": args.limit}.items() if v}
    try:
        response = requests.get(f"{api.rstrip('/')}/v1/dead-letters", headers=auth(token), params=query, timeout=30)
    except requests.RequestException as e:
        print(f"uvrd dead-letters: the API did not answer: {e}", file=sys.stderr)
        return 2
    if response.status_code != 200:
        print(f"uvrd dead-letters: HTTP {response.status_code}: {error_of(response)}", file=sys.stderr)
        return 2
    body = response.json()
    if args.json:
        print(json.dumps(body))
        return 0
    print(f"{body['count']} dead letters; {len(body['dead_letters'])} shown, newest first")
    for entry in body["dead_letters"]:
        when = datetime.fromtimestamp(entry.get("timestamp_ms", 0) / 1000, timezone.utc).isoformat(timespec="seconds")
        print(f"  {when}  {entry.get('stage') or '?':<9} {entry.get('task_uuid') or '-'}  from {entry.get('source')}")
        print(f"      {entry.get('error') or 'no error recorded'}")
    return 0
