"""Who may call what: bearer tokens for /v1, HTTP Basic for the old /generate,
signed links for stem downloads.

A bearer token is one of the configured ``api.tokens`` (each an operator key named
``config-token-N``, N counting from 1 in the file's order, so a deployment made before named keys
upgrades unchanged) or a named key's (uvrd/keys/).  The caller's key name is bound to the
request's log lines (``KEY=`` in the journal).

Secrets are compared as SHA-256 digests with ``hmac.compare_digest`` against
every configured entry, without stopping at a match, so neither the timing
of one comparison nor the number of comparisons tells how close a guess
came or which entry matched.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

import structlog

from uvrd.storage import links
from uvrd.api.errors import ApiError
from uvrd.keys.board import KeyBoard
from uvrd.keys.record import CONFIG_TOKEN_PREFIX, Caller

BEARER_CHALLENGE = 'Bearer realm="uvrd"'
BASIC_CHALLENGE = 'Basic realm="uvrd", charset="UTF-8"'


def _digest(secret: str | bytes) -> bytes:
    return hashlib.sha256(secret.encode() if isinstance(secret, str) else secret).digest()


class SecretSet:
    def __init__(self, secrets: tuple[str, ...]):
        self._digests = [_digest(s) for s in secrets]

    def __bool__(self) -> bool:
        return bool(self._digests)

    def contains(self, candidate: str | bytes) -> bool:
        return self.index(candidate) is not None

    def index(self, candidate: str | bytes) -> int | None:
        """Which entry *candidate* is (the first, if listed twice), after comparing every one."""
        probe = _digest(candidate)
        found = None
        for i, digest in enumerate(self._digests):
            if hmac.compare_digest(probe, digest) and found is None:
                found = i
        return found


def _scheme_value(header: str | None, scheme: str) -> str | None:
    """The credentials after ``<scheme> `` (case-insensitive scheme), or None."""
    if not header:
        return None
    given, _, value = header.strip().partition(" ")
    return value.strip() if given.lower() == scheme.lower() else None


class Authenticator:
    def __init__(self, tokens: tuple[str, ...], basic_auth: tuple[str, ...], link_secret: str,
                 keys: KeyBoard | None = None):
        self.tokens = SecretSet(tokens)
        self.basic = SecretSet(basic_auth)
        self.link_secret = link_secret
        self.keys = keys

    def require_bearer(self, headers) -> Caller:
        """The caller of a /v1 call: a configured token or a live key; 401 otherwise."""
        header = headers.get("Authorization")
        if not header:
            raise ApiError(401, "missing bearer token (send Authorization: Bearer <token>)",
                           {"WWW-Authenticate": BEARER_CHALLENGE})
        token = _scheme_value(header, "Bearer")
        caller = self._caller(token) if token else None
        if caller is None:
            raise ApiError(401, "invalid bearer token",
                           {"WWW-Authenticate": f'{BEARER_CHALLENGE}, error="invalid_token"'})
        structlog.contextvars.bind_contextvars(key=caller.name)
        return caller

    def require_operator(self, headers) -> Caller:
        """The caller of a call that only an operator key may make (the fleet, dead letters, keys)."""
        caller = self.require_bearer(headers)
        if not caller.operator:
            raise ApiError(403, f"this call needs an operator key; key {caller.name!r} may only submit and "
                                "follow its own tasks")
        return caller

    def _caller(self, token: str) -> Caller | None:
        index = self.tokens.index(token)
        if index is not None:
            return Caller(f"{CONFIG_TOKEN_PREFIX}{index + 1}", "operator")
        key = self.keys.verify(token) if self.keys is not None else None
        return Caller(key.name, key.scope) if key is not None else None

    def require_basic(self, headers) -> None:
        header = headers.get("Authorization")
        if not header:
            raise ApiError(401, "missing HTTP Basic credentials", {"WWW-Authenticate": BASIC_CHALLENGE})
        encoded = _scheme_value(header, "Basic")
        try:
            pair = base64.b64decode(encoded or "", validate=True) if encoded else b""
        except (binascii.Error, ValueError):
            pair = b""
        if b":" not in pair or not self.basic.contains(pair):
            raise ApiError(401, "invalid HTTP Basic credentials", {"WWW-Authenticate": BASIC_CHALLENGE})

    def require_stem_access(self, headers, args, task_uuid: str, stem: str) -> Caller | None:
        """The caller of a bearer token (whose task it must be), or None for a signed link that has
        not expired (what webhook receivers hold: the link itself is the permission)."""
        if headers.get("Authorization"):
            return self.require_bearer(headers)
        expires, sig = args.get("expires"), args.get("sig")
        if expires is None and sig is None:
            raise ApiError(401, "missing bearer token or signed download link",
                           {"WWW-Authenticate": BEARER_CHALLENGE})
        if not links.verify(self.link_secret, task_uuid, stem, expires, sig):
            raise ApiError(403, "the download link is invalid or has expired")
        return None
