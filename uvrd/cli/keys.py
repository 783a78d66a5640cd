"""``uvrd keys add|list|revoke``: the API's named keys, through any api of the deployment (an operator
key's calls: the configured api.tokens are operator keys).

``add NAME --scope submit|operator`` prints the new key's token alone on stdout (so that a script can
keep it: ``TOKEN=$(uvrd keys add app-1 --scope submit)``) and what it is on stderr; the api keeps
only its hash, so it is never shown again.  ``revoke NAME``: every api refuses the key within
seconds, and its name is not given out again.

The API address and token come as for ``uvrd submit``.  Exit status 0; 1 when the name is taken
(add) or names no key (revoke); 2 when the API could not be reached or refused the call.
"""

from __future__ import annotations

import json
import sys

from uvrd.cli.endpoint import add_endpoint_arguments, client
from uvrd.client.api_client import ApiClient, Conflict, NotFound, Refused, Unreachable
from uvrd.keys.record import SCOPES


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    adding = sub.add_parser("add", help="add a key; its token is printed this once")
    adding.add_argument("name", help="1-64 letters, digits, '.', '_' or '-'")
    adding.add_argument("--scope", required=True, choices=SCOPES,
                        help="submit: create tasks and follow its own; operator: everything")
    add_endpoint_arguments(adding)
    listing = sub.add_parser("list", help="every key, revoked ones too; never a secret")
    listing.add_argument("--json", action="store_true", help="one JSON object, for scripts")
    add_endpoint_arguments(listing)
    revoking = sub.add_parser("revoke", help="revoke a key: every api refuses it within seconds")
    revoking.add_argument("name")
    add_endpoint_arguments(revoking)


def run(args) -> int:
    api = client(args)
    actions = {"add": _add, "list": _list, "revoke": _revoke}
    try:
        return actions[args.action](api, args)
    except (NotFound, Conflict) as e:
        print(f"uvrd keys: {e.error}", file=sys.stderr)
        return 1
    except (Refused, Unreachable) as e:
        print(f"uvrd keys: {e}", file=sys.stderr)
        return 2


def _add(api: ApiClient, args) -> int:
    body = api.add_key(args.name, args.scope)
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
        print(f"  {key['name']:<32} {key['scope']:<9} {since}{revoked}")
    return 0


def _revoke(api: ApiClient, args) -> int:
    body = api.revoke_key(args.name)
    print(f"key {body['name']} revoked at {body['revoked_at']}")
    return 0
