"""``uvrd dead-letters list|show|replay``: what went to the dead-letter topic, newest first, with why
(the error), whence (the record it copies) and the stage that gave up on it, from any api; ``show``
prints one letter's record; ``replay`` sends letters again, each exactly once (uvrd/boards/replays.py).

The API address and token come as for ``uvrd submit``.  Exit status 0; 2 when the API could not
be reached or refused (for ``replay``: any letter it could not replay; one replayed already is not
an error).
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, UTC

from uvrd.cli import arguments
from uvrd.cli.endpoint import add_endpoint_arguments, client
from uvrd.client.api_client import ApiClient, Conflict, Refused, Unreachable
from uvrd.peers import numbers


def _add_filters(parser, limit: int) -> None:
    parser.add_argument("--task", help="only this task's")
    parser.add_argument("--error", help="only those whose error holds this text")
    parser.add_argument("--since", metavar="TIME", help="only those from this time on (ISO 8601, UTC by default)")
    parser.add_argument("--until", metavar="TIME", help="only those before this time")
    parser.add_argument("--limit", type=arguments.whole(1, 1000), default=limit,
                        help=f"at most this many (1-1000; default {limit})")


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
    api = client(args)
    actions = {"show": _show, "list": _list, "replay": _replay}
    try:
        return actions[args.action](api, args)
    except (Refused, Unreachable, _NoLetter) as e:
        print(f"uvrd dead-letters: {e}", file=sys.stderr)
        return 2


class _NoLetter(Exception):
    """What names no letter: neither coordinates nor a task with one."""


def _coordinates(api: ApiClient, where: str) -> tuple[int, int]:
    """(partition, offset) of *where*: coordinates already, or a task (its latest letter)."""
    if "/" not in where:
        found = api.dead_letters(task_uuid=where, limit=1)["dead_letters"]
        if not found:
            raise _NoLetter(f"no dead letter of task {where} among the latest")
        return int(found[0]["partition"]), int(found[0]["offset"])
    before, _, after = where.partition("/")
    partition, offset = numbers.decimal(before), numbers.decimal(after)
    if partition is None or offset is None:
        raise _NoLetter(f"{where!r} is neither PARTITION/OFFSET nor a task")
    return partition, offset


def _show(api: ApiClient, args) -> int:
    letter = api.dead_letter(*_coordinates(api, args.letter))
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


def _replay(api: ApiClient, args) -> int:
    if args.letter:
        letters = [_coordinates(api, args.letter)]
    elif any((args.task, args.error, args.since, args.until)):
        # Oldest first: the order they failed in.
        letters = [(int(e["partition"]), int(e["offset"])) for e in
                   reversed(api.dead_letters(**_query(args))["dead_letters"])]
    else:
        raise _NoLetter("name a letter or a task, or choose letters with --task, --error, --since or --until")
    failed = 0
    for partition, offset in letters:
        where = f"{partition}/{offset}"
        try:
            body = api.replay(partition, offset)
        except Conflict as e:
            print(f"{where}: {e.error}")
        except Refused as e:
            failed += 1
            print(f"{where}: not replayed: {e}", file=sys.stderr)
        else:
            print(f"{where}: replayed task {body['task_uuid']} (replay {body['replay']}) to {body['requeued_to']}")
    print(f"{len(letters) - failed} of {len(letters)} dead letters replayed or replayed already")
    return 2 if failed else 0


def _list(api: ApiClient, args) -> int:
    body = api.dead_letters(**_query(args))
    if args.json:
        print(json.dumps(body))
        return 0
    print(f"{body['count']} dead letters; {len(body['dead_letters'])} shown, newest first")
    for entry in body["dead_letters"]:
        print(f"  {_when(entry)}  {entry['partition']}/{entry['offset']:<6} {entry.get('stage') or '?':<9} "
              f"{entry.get('task_uuid') or '-'}  from {entry.get('source')}")
        print(f"      {entry.get('error') or 'no error recorded'}")
    return 0
