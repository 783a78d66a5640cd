"""Who may call what: bearer tokens for /v1, HTTP Basic for the old /generate,
signed links for stem downloads.

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

from uvrd.storage import links
from uvrd.api.errors import ApiError

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
        probe = _digest(candidate)
        found = False
        for digest in self._digests:
            found |= hmac.compare_digest(probe, digest)
        return found


def _scheme_value(header: str | None, scheme: str) -> str | None:
    """The credentials after ``<scheme> `` (case-insensitive scheme), or None."""
    if not header:
        return None
    given, _, value = header.strip().partition(" ")
    return value.strip() if given.lower() == scheme.lower() else None


class Authenticator:
    def __init__(self, tokens: tuple[str, ...], basic_auth: tuple[str, ...], link_secret: str):
        self.tokens = SecretSet(tokens)
        self.basic = SecretSet(basic_auth)
        self.link_secret = link_secret

    def require_bearer(self, headers) -> None:
        header = headers.get("Authorization")
        if not header:
            raise ApiError(401, "missing bearer token (send Authorization: Bearer <token>)",
                           {"WWW-Authenticate": BEARER_CHALLENGE})
        token = _scheme_value(header, "Bearer")
        if not token or not self.tokens.contains(token):
            raise ApiError(401, "invalid bearer token",
                           {"WWW-Authenticate": f'{BEARER_CHALLENGE}, error="invalid_token"'})

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

    def require_stem_access(self, headers, args, task_uuid: str, stem: str) -> None:
        """A bearer token, or a signed link that has not expired (what webhook receivers hold)."""
        if headers.get("Authorization"):
            self.require_bearer(headers)
            return
        expires, sig = args.get("expires"), args.get("sig")
        if expires is None and sig is None:
            raise ApiError(401, "missing bearer token or signed download link",
                           {"WWW-Authenticate": BEARER_CHALLENGE})
        if not links.verify(self.link_secret, task_uuid, stem, expires, sig):
            raise ApiError(403, "the download link is invalid or has expired")
