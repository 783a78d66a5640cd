"""``uvrd dead-letters list|show|replay``: what went to the dead-letter topic, newest first, with why
(the error), whence (the record it copies) and the stage that gave up on it, from any api; ``show``
prints one letter's record; ``replay`` sends letters again, each exactly once (uvrd/kafka/replays.py).

The API address and token come as for ``uvrd submit``.  Exit status 0; 2 when the API could not
be reached or refused (for ``replay``: any letter it could not replay; one replayed already is not
an error).
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, UTC

import requests

from uvrd.submit import add_endpoint_arguments, auth, endpoint, error_of


def _add_filters(parser, limit: int) -> None:
    parser.add_argument("--task", help="only this task's")
    parser.add_argument("--error", help="only those whose error holds this text")
    parser.add_argument("--since", metavar="TIME", help="only those from this time on (ISO 8601, UTC by default)")
    parser.add_argument("--until", metavar="TIME", help="only those before this time")
    parser.add_argument("--limit", type=int, default=limit, help=f"at most this many (1-1000; default {limit})")


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = sub.add_parser("list", help="the latest dead letters, newest first")
    _add_filters(listing, 50)
    listing.add_argument("--json", action="store_true", help="one JSON object, for scripts")
    add_endpoint_arguments(listing)
    showing = sub.add_parser("show", help="one dead letter and the record it copies")
    showing.add_argument("letter", metavar="PARTITION/OFFSET|TASK_UUID",
                         help="the letter's coordinates, as list prints them, or a task (its latest letter)")
    showing.add_argument("--json", action="store_true", help="one JSON object, for scripts")
    add_endpoint_arguments(showing)
    replaying = sub.add_parser("replay", help="send dead letters again, each exactly once: a failed task back to "
                                              "its queue, an undelivered result back to the uploader")
    replaying.add_argument("letter", nargs="?", metavar="PARTITION/OFFSET|TASK_UUID",
                           help="one letter, or a task (its latest letter); or none, and the filters choose")
    _add_filters(replaying, 1000)
    add_endpoint_arguments(replaying)


def run(args) -> int:
    api, token = endpoint(args)
    actions = {"show": _show, "list": _list, "replay": _replay}
    try:
        return actions[args.action](api, token, args)
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


def _coordinates(api: str, token: str, where: str) -> str:
    """PARTITION/OFFSET of *where*: coordinates already, or a task (its latest letter)."""
    if "/" not in where:
        found = _get(api, token, "/v1/dead-letters", task_uuid=where, limit=1)["dead_letters"]
        if not found:
            raise _Refused(f"no dead letter of task {where} among the latest")
        return f"{found[0]['partition']}/{found[0]['offset']}"
    partition, _, offset = where.partition("/")
    if not (partition.isdigit() and offset.isdigit()):
        raise _Refused(f"{where!r} is neither PARTITION/OFFSET nor a task")
    return f"{int(partition)}/{int(offset)}"


def _show(api: str, token: str, args) -> int:
    letter = _get(api, token, f"/v1/dead-letters/{_coordinates(api, token, args.letter)}")
    if args.json:
        print(json.dumps(letter))
        return 0
    print(f"dead letter {letter['partition']}/{letter['offset']}: {_when(letter)}, {letter.get('stage') or '?'} stage, "
          f"task {letter.get('task_uuid') or '-'}, from {letter.get('source')}")
    print(f"  error: {letter.get('error') or 'no error recorded'}")
    print(json.dumps(letter["record"], indent=2, sort_keys=True))
    return 0


def _when(entry: dict) -> str:
    return datetime.fromtimestamp(entry.get("timestamp_ms", 0) / 1000, UTC).isoformat(timespec="seconds")


def _query(args) -> dict:
    return {k: v for k, v in {"task_uuid": args.task, "error": args.error, "since": args.since,
                              "until": args.until, "limit": args.limit}.items() if v}


def _replay(api: str, token: str, args) -> int:
    if args.letter:
        letters = [_coordinates(api, token, args.letter)]
    elif any((args.task, args.error, args.since, args.until)):
        # Oldest first: the order they failed in.
        letters = [f"{e['partition']}/{e['offset']}" for e in
                   reversed(_get(api, token, "/v1/dead-letters", **_query(args))["dead_letters"])]
    else:
        raise _Refused("name a letter or a task, or choose letters with --task, --error, --since or --until")
    failed = 0
    for where in letters:
        response = requests.post(f"{api.rstrip('/')}/v1/dead-letters/{where}/replay", headers=auth(token), timeout=60)
        if response.status_code == 202:
            body = response.json()
            print(f"{where}: replayed task {body['task_uuid']} (replay {body['replay']}) to {body['requeued_to']}")
        elif response.status_code == 409:
            print(f"{where}: {error_of(response)}")
        else:
            failed += 1
            print(f"{where}: not replayed: HTTP {response.status_code}: {error_of(response)}", file=sys.stderr)
    print(f"{len(letters) - failed} of {len(letters)} dead letters replayed or replayed already")
    return 2 if failed else 0


def _list(api: str, token: str, args) -> int:
    body = _get(api, token, "/v1/dead-letters", **_query(args))
    if args.json:
        print(json.dumps(body))
        return 0
    print(f"{body['count']} dead letters; {len(body['dead_letters'])} shown, newest first")
    for entry in body["dead_letters"]:
        print(f"  {_when(entry)}  {entry['partition']}/{entry['offset']:<6} {entry.get('stage') or '?':<9} "
              f"{entry.get('task_uuid') or '-'}  from {entry.get('source')}")
        print(f"      {entry.get('error') or 'no error recorded'}")
    return 0
