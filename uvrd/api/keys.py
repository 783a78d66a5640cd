"""The named API keys: POST /v1/keys (add one: its token is answered once), GET /v1/keys, PATCH
/v1/keys/<name> (its quota), DELETE /v1/keys/<name> (revoke), all for operator keys; and GET
/v1/whoami for any key.

The keys live in the compacted keys topic (uvrd/keys/), so every api of a deployment knows a key
as soon as its reader sees the record, and refuses a revoked one the same way.  The configured
``api.tokens`` are listed as the operator keys ``config-token-N``; they change only with the
configuration.
"""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from uvrd.api.context import current
from uvrd.api.errors import ApiError
from uvrd.api.submit import json_object
from uvrd.keys import record as keys
from uvrd.keys import registry
from uvrd.keys.record import CONFIG_TOKEN_PREFIX
from uvrd.keys.registry import KeyAdded, KeyExists, KeyIsRevoked, KeyRevoked, KeysUnconfirmed, NoSuchKey, QuotaSet

blueprint = Blueprint("keys", __name__)

RETRY_AFTER_S = "5"


@blueprint.get("/v1/whoami")
def whoami():
    caller = current().auth.require_bearer(request.headers)
    return jsonify(name=caller.name, scope=caller.scope)


@blueprint.post("/v1/keys")
def add_key():
    api = current()
    api.auth.require_operator(request.headers)
    body = json_object()
    try:
        name, scope = keys.check_name(body.get("name")), keys.check_scope(body.get("scope"))
        quota = keys.check_quota(body)
    except keys.KeyProblem as e:
        raise ApiError(400, str(e)) from None
    match registry.add(api.config.kafka, api.config.topics.keys, name, scope, quota):
        case KeyAdded(key=key, token=token):
            api.backend.keys.note(key)
            response = jsonify(**key.public(), token=token)
            response.status_code = 201
            response.headers["Cache-Control"] = "no-store"  # the one answer that holds the token
            return response
        case KeyExists(key=key):
            state = "was revoked (a revoked key's name is not given out again)" if key.revoked else "exists"
            raise ApiError(409, f"a key named {name!r} {state}")
        case KeysUnconfirmed(reason=reason):
            raise ApiError(503, f"{reason}; asking again is safe", {"Retry-After": RETRY_AFTER_S})
    raise TypeError("no answer for the key's outcome")


@blueprint.get("/v1/keys")
def list_keys():
    api = current()
    api.auth.require_operator(request.headers)
    configured = [{"name": f"{CONFIG_TOKEN_PREFIX}{i + 1}", "scope": "operator", "configured": True}
                  for i in range(len(api.config.api.tokens))]
    return jsonify(keys=configured + [key.public() for key in api.backend.keys.all()])


@blueprint.patch("/v1/keys/<name>")
def set_quota(name: str):
    """Change a key's quota: ``max_active`` and ``audio_seconds_per_day``, each a whole number, or
    null for no limit; a member left out keeps its value."""
    api = current()
    api.auth.require_operator(request.headers)
    body = json_object()
    unknown = sorted(set(body) - set(keys.QUOTA_FIELDS))
    if unknown or not body:
        raise ApiError(400, f"send one or both of {', '.join(keys.QUOTA_FIELDS)} (a whole number, or null for no "
                            f"limit){'; unknown: ' + ', '.join(map(repr, unknown)) if unknown else ''}")
    try:
        keys.check_quota(body)
    except keys.KeyProblem as e:
        raise ApiError(400, str(e)) from None
    if name.startswith(CONFIG_TOKEN_PREFIX):
        raise ApiError(409, f"{name} is one of the configured api.tokens, which have no quota")
    if not keys.NAME_RE.fullmatch(name):
        raise ApiError(404, f"no key {name!r}")
    match registry.set_quota(api.config.kafka, api.config.topics.keys, name, body):
        case QuotaSet(key=key):
            api.backend.keys.note(key)
            return jsonify(key.public())
        case KeyIsRevoked():
            raise ApiError(409, f"key {name!r} is revoked")
        case NoSuchKey():
            raise ApiError(404, f"no key {name!r}")
        case KeysUnconfirmed(reason=reason):
            raise ApiError(503, f"{reason}; asking again is safe", {"Retry-After": RETRY_AFTER_S})
    raise TypeError("no answer for the key's outcome")


@blueprint.delete("/v1/keys/<name>")
def revoke_key(name: str):
    api = current()
    api.auth.require_operator(request.headers)
    if name.startswith(CONFIG_TOKEN_PREFIX):
        raise ApiError(409, f"{name} is one of the configured api.tokens: remove it from the configuration "
                            "and restart the api")
    if not keys.NAME_RE.fullmatch(name):
        raise ApiError(404, f"no key {name!r}")
    match registry.revoke(api.config.kafka, api.config.topics.keys, name):
        case KeyRevoked(key=key):
            api.backend.keys.note(key)
            return jsonify(key.public())
        case NoSuchKey():
            raise ApiError(404, f"no key {name!r}")
        case KeysUnconfirmed(reason=reason):
            raise ApiError(503, f"{reason}; asking again is safe", {"Retry-After": RETRY_AFTER_S})
    raise TypeError("no answer for the key's outcome")
