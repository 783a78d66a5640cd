"""``uvrd dead-letters list|show``: what went to the dead-letter topic, newest first, with why (the
error), whence (the record it copies) and the stage that gave up on it, from any api; ``show`` prints
one letter's record.

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
    listing.add_argument("--since", metavar="TIME", help="only those from this time on (ISO 8601, UTC by default)")
    listing.add_argument("--until", metavar="TIME", help="only those before this time")
    listing.add_argument("--limit", type=int, default=50, help="at most this many (1-1000)")
    listing.add_argument("--json", action="store_true", help="one JSON object, for scripts")
    add_endpoint_arguments(listing)
    showing = sub.add_parser("show", help="one dead letter and the record it copies")
    showing.add_argument("letter", metavar="PARTITION/OFFSET|TASK_UUID",
                         help="the letter's coordinates, as list prints them, or a task (its latest letter)")
    showing.add_argument("--json", action="store_true", help="one JSON object, for scripts")
    add_endpoint_arguments(showing)


def run(args) -> int:
    api, token = endpoint(args)
    try:
        return _show(api, token, args) if args.action == "show" else _list(api, token, args)
    except requests.RequestException as e:
        print(f"uvrd dead-letters: the API did not answer: {e}", file=sys.stderr)
        return 2
    except _Refused as e:
        print(f"uvrd dead-letters: {e}", file=sys.stderr)
        return 2


class _Refused(Exception):
    pass


def _get(api: str, token: str, path: str, **params) -> dict:
    response = requests.get(f"{api.rstrip('/')}{path}", headers=auth(token), params=params, timeout=30)
    if response.status_code != 200:
        raise _Refused(f"HTTP {response.status_code}: {error_of(response)}")
    return response.json()


def _show(api: str, token: str, args) -> int:
    where = args.letter
    if "/" not in where:  # a task: its latest letter
        found = _get(api, token, "/v1/dead-letters", task_uuid=where, limit=1)["dead_letters"]
        if not found:
            raise _Refused(f"no dead letter of task {where} among the latest")
        where = f"{found[0]['partition']}/{found[0]['offset']}"
    partition, _, offset = where.partition("/")
    if not (partition.isdigit() and offset.isdigit()):
        raise _Refused(f"{args.letter!r} is neither PARTITION/OFFSET nor a task")
    letter = _get(api, token, f"/v1/dead-letters/{int(partition)}/{int(offset)}")
    if args.json:
        print(json.dumps(letter))
        return 0
    print(f"dead letter {letter['partition']}/{letter['offset']}: {_when(letter)}, {letter.get('stage') or '?'} stage, "
          f"task {letter.get('task_uuid') or '-'}, from {letter.get('source')}")
    print(f"  error: {letter.get('error') or 'no error recorded'}")
    print(json.dumps(letter["record"], indent=2, sort_keys=True))
    return 0


def _when(entry: dict) -> str:
    return datetime.fromtimestamp(entry.get("timestamp_ms", 0) / 1000, timezone.utc).isoformat(timespec="seconds")


def _list(api: str, token: str, args) -> int:
    query = {k: v for k, v in {"task_uuid": args.task, "error": args.error, "since": args.since,
                               "until": args.until, "limit": args.limit}.items() if v}
    body = _get(api, token, "/v1/dead-letters", **query)
    if args.json:
        print(json.dumps(body))
        return 0
    print(f"{body['count']} dead letters; {len(body['dead_letters'])} shown, newest first")
    for entry in body["dead_letters"]:
        print(f"  {_when(entry)}  {entry['partition']}/{entry['offset']:<6} {entry.get('stage') or '?':<9} "
              f"{entry.get('task_uuid') or '-'}  from {entry.get('source')}")
        print(f"      {entry.get('error') or 'no error recorded'}")
    return 0
