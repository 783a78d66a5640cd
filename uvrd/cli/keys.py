"""``uvrd keys add|list|set-quota|usage|revoke``: the API's named keys, through any api of the deployment (an operator
key's calls: the configured api.tokens are operator keys).

``add NAME --scope submit|operator`` prints the new key's token alone on stdout (so that a script can
keep it: ``TOKEN=$(uvrd keys add app-1 --scope submit)``) and what it is on stderr; the api keeps
only its hash, so it is never shown again.  ``--max-active N`` and ``--audio-seconds-per-day S`` set
its quotas; ``set-quota NAME`` changes them (``none`` removes one); ``usage NAME`` shows its use
against them.  ``revoke NAME``: every api refuses the key within
seconds, and its name is not given out again.

The API address and token come as for ``uvrd submit``.  Exit status 0; 1 when the name is taken
(add) or names no key (revoke); 2 when the API could not be reached or refused the call.
"""

from __future__ import annotations

import argparse
import json
import sys

from uvrd.cli.endpoint import add_endpoint_arguments, client
from uvrd.client.api_client import ApiClient, Conflict, NotFound, Refused, Unreachable
from uvrd.keys.record import QUOTA_FIELDS, SCOPES


def _quota_value(text: str) -> int | None:
    """A quota on the command line: a whole number, or ``none`` for no limit (the api checks its bounds)."""
    if text.lower() == "none":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number or 'none': {text!r}") from None


def _add_quota_arguments(parser) -> None:
    parser.add_argument("--max-active", type=_quota_value, default=argparse.SUPPRESS, metavar="N",
                        help="tasks of the key queued or running at once ('none': no limit)")
    parser.add_argument("--audio-seconds-per-day", type=_quota_value, default=argparse.SUPPRESS, metavar="S",
                        help="audio seconds the key may submit per UTC day ('none': no limit)")


def _quota_of(args) -> dict[str, int | None]:
    return {field: getattr(args, field) for field in QUOTA_FIELDS if hasattr(args, field)}


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    adding = sub.add_parser("add", help="add a key; its token is printed this once")
    adding.add_argument("name", help="1-64 letters, digits, '.', '_' or '-'")
    adding.add_argument("--scope", required=True, choices=SCOPES,
                        help="submit: create tasks and follow its own; operator: everything")
    _add_quota_arguments(adding)
    add_endpoint_arguments(adding)
    quota = sub.add_parser("set-quota", help="change a key's quotas")
    quota.add_argument("name")
    _add_quota_arguments(quota)
    add_endpoint_arguments(quota)
    use = sub.add_parser("usage", help="a key's tasks queued or running and its audio seconds today, with its quotas")
    use.add_argument("name", nargs="?", help="the key (default: the caller's)")
    add_endpoint_arguments(use)
    listing = sub.add_parser("list", help="every key, revoked ones too; never a secret")
    listing.add_argument("--json", action="store_true", help="one JSON object, for scripts")
    add_endpoint_arguments(listing)
    revoking = sub.add_parser("revoke", help="revoke a key: every api refuses it within seconds")
    revoking.add_argument("name")
    add_endpoint_arguments(revoking)


def run(args) -> int:
    api = client(args)
    actions = {"add": _add, "list": _list, "revoke": _revoke, "set-quota": _set_quota, "usage": _usage}
    try:
        return actions[args.action](api, args)
    except (NotFound, Conflict) as e:
        print(f"uvrd keys: {e.error}", file=sys.stderr)
        return 1
    except (Refused, Unreachable) as e:
        print(f"uvrd keys: {e}", file=sys.stderr)
        return 2


def _add(api: ApiClient, args) -> int:
    body = api.add_key(args.name, args.scope, **_quota_of(args))
    print(f"key {body['name']} ({body['scope']}) added at {body['created_at']}; its token, shown only this once:",
          file=sys.stderr)
    print(body["token"])
    return 0


def _list(api: ApiClient, args) -> int:
    keys = api.keys()
    if args.json:
        print(json.dumps({"keys": keys}))
        return 0
    for key in keys:
        since = "configured in api.tokens" if key.get("configured") else f"added {key.get('created_at')}"
        revoked = f", revoked {key['revoked_at']}" if key.get("revoked_at") else ""
        limits = {k: v for k, v in (key.get("quota") or {}).items() if v is not None}
        quota = "; " + _quota_text(limits) if limits else ""
        print(f"  {key['name']:<32} {key['scope']:<9} {since}{revoked}{quota}")
    return 0


def _set_quota(api: ApiClient, args) -> int:
    change = _quota_of(args)
    if not change:
        print("uvrd keys set-quota: give --max-active and/or --audio-seconds-per-day", file=sys.stderr)
        return 2
    body = api.set_quota(args.name, **change)
    print(f"key {body['name']}: {_quota_text(body.get('quota') or {})}")
    return 0


def _usage(api: ApiClient, args) -> int:
    body = api.usage(args.name)
    quota = body.get("quota") or {}
    print(f"key {body['key']} on {body['day']} (UTC): {body['active']} tasks queued or running"
          f" (max_active {quota.get('max_active') or 'unlimited'}), {body['audio_seconds_today']:g} audio seconds"
          f" (audio_seconds_per_day {quota.get('audio_seconds_per_day') or 'unlimited'})")
    return 0


def _quota_text(quota: dict) -> str:
    return ", ".join(f"{field} {quota.get(field) if quota.get(field) is not None else 'unlimited'}"
                     for field in QUOTA_FIELDS)


def _revoke(api: ApiClient, args) -> int:
    body = api.revoke_key(args.name)
    print(f"key {body['name']} revoked at {body['revoked_at']}")
    return 0
