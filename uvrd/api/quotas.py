"""GET /v1/usage: a key's use and its quotas (uvrd/api/quota_gate.py counts and checks them)."""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Blueprint, jsonify, request

from uvrd.api.context import current
from uvrd.api.errors import ApiError
from uvrd.api.quota_gate import day_of, next_day
from uvrd.keys.record import CONFIG_TOKEN_PREFIX, NAME_RE, Quota

blueprint = Blueprint("quotas", __name__)


@blueprint.get("/v1/usage")
def usage():
    """The caller's use and limits (an operator may name another key with ``key``)."""
    api = current()
    caller = api.auth.require_bearer(request.headers)
    name = request.args.get("key", caller.name)
    if name != caller.name and not caller.operator:
        raise ApiError(403, f"key {caller.name!r} may only ask about its own usage")
    key = api.backend.keys.get(name) if NAME_RE.fullmatch(name) else None
    configured = name.startswith(CONFIG_TOKEN_PREFIX) and name[len(CONFIG_TOKEN_PREFIX):].isdigit() \
        and 1 <= int(name[len(CONFIG_TOKEN_PREFIX):]) <= len(api.config.api.tokens)
    if key is None and not configured:
        raise ApiError(404, f"no key {name!r}")
    now = datetime.now(UTC)
    use = api.quotas.use(api.backend, name, now)
    quota = key.quota if key is not None else Quota()
    return jsonify(key=name, day=day_of(now), resets_at=next_day(now).isoformat(), active=use.active,
                   audio_seconds_today=round(use.audio_seconds, 3), quota=quota.as_dict())
