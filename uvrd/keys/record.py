"""One API key: its name, its scope, and a hash of its secret.

The secret is 32 random bytes shown once, when the key is added; only a salted scrypt hash of it is
kept.  A token names its key (``<name>~<secret>``), so an api checks one hash per request rather
than every key's: ``~`` is in no key name and in no secret (both are URL-safe base64 or safer),
and RFC 6750's token syntax allows it.

A revoked key keeps its record, marked revoked, and its name is never given out again: tasks
belong to a key by name, so a new key of the same name would own the old key's tasks.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Any, Literal, get_args

from uvrd import messages

Scope = Literal["submit", "operator"]
SCOPES: tuple[str, ...] = get_args(Scope)
NAME_RE = messages.KEY_NAME_RE
# The names of the configured api.tokens (config-token-1, ...): no key added later may take one.
CONFIG_TOKEN_PREFIX = "config-token-"
SEPARATOR = "~"
SECRET_BYTES = 32
SALT_BYTES = 16
# scrypt at 16 MiB and about 50 ms a hash: an api verifies a token once and then remembers it (board.py).
KDF = "scrypt:16384:8:1"
_N, _R, _P = 16384, 8, 1


class KeyProblem(ValueError):
    """A name, scope or quota no key may have: the sentence says which rule it breaks."""


# Each quota is a whole number from 1 to its bound; none set means no limit.
MAX_ACTIVE_BOUND = 1_000_000
AUDIO_SECONDS_BOUND = 10**9
QUOTA_FIELDS = {"max_active": MAX_ACTIVE_BOUND, "audio_seconds_per_day": AUDIO_SECONDS_BOUND}


@dataclass(frozen=True)
class Quota:
    """A key's limits: tasks queued or running at once, and audio seconds accepted per UTC day."""

    max_active: int | None = None
    audio_seconds_per_day: int | None = None

    def as_dict(self) -> dict[str, int | None]:
        return {"max_active": self.max_active, "audio_seconds_per_day": self.audio_seconds_per_day}

    def encoded(self) -> dict[str, int]:
        return {k: v for k, v in self.as_dict().items() if v is not None}


def check_quota_value(field: str, value: object) -> int | None:
    """One quota's value as given (JSON or a command line): a whole number within its bound, or
    None (no limit)."""
    if value is None:
        return None
    bound = QUOTA_FIELDS[field]
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= bound:
        raise KeyProblem(f"{field!r} must be a whole number from 1 to {bound}, or null for no limit")
    return value


def check_quota(values: dict, base: Quota | None = None) -> Quota:
    """The quota *values* (a JSON object's members; one absent keeps *base*'s, null removes it) set."""
    base = base or Quota()
    fields = base.as_dict()
    for field in QUOTA_FIELDS:
        if field in values:
            fields[field] = check_quota_value(field, values[field])
    return Quota(**fields)


@dataclass(frozen=True)
class Caller:
    """Who a request comes from: the key's name and scope."""

    name: str
    scope: Scope

    @property
    def operator(self) -> bool:
        return self.scope == "operator"

    def owns(self, owner: object) -> bool:
        """May this caller see a task owned by *owner* (a key's name, or None for a task no key
        submitted: an old one, or one from POST /generate)?  Operators see every task."""
        return self.operator or (isinstance(owner, str) and hmac.compare_digest(owner, self.name))


@dataclass(frozen=True)
class KeyRecord:
    name: str
    scope: Scope
    created_at: str
    salt: str = ""  # hex; empty once revoked
    digest: str = ""  # hex scrypt of the secret; empty once revoked
    revoked_at: str | None = None
    quota: Quota = Quota()

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def matches(self, secret: str) -> bool:
        """The secret hashes to this key's digest (compared in constant time); never for a revoked key."""
        if self.revoked or not self.digest:
            return False
        return hmac.compare_digest(_hash(secret, bytes.fromhex(self.salt)), bytes.fromhex(self.digest))

    def revoke(self, at: str) -> KeyRecord:
        return KeyRecord(self.name, self.scope, self.created_at, revoked_at=at, quota=self.quota)

    def with_quota(self, quota: Quota) -> KeyRecord:
        return KeyRecord(self.name, self.scope, self.created_at, self.salt, self.digest, self.revoked_at, quota)

    def public(self) -> dict[str, Any]:
        """What GET /v1/keys shows: never the salt or the digest."""
        return {"name": self.name, "scope": self.scope, "created_at": self.created_at,
                "revoked_at": self.revoked_at, "quota": self.quota.as_dict()}

    def encode(self) -> bytes:
        value: dict[str, Any] = {"name": self.name, "scope": self.scope, "created_at": self.created_at}
        if self.quota.encoded():
            value["quota"] = self.quota.encoded()
        if self.revoked_at is not None:
            value["revoked_at"] = self.revoked_at
        else:
            value.update(kdf=KDF, salt=self.salt, digest=self.digest)
        return json.dumps(value, separators=(",", ":")).encode()


def check_name(name: object) -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise KeyProblem("a key's name must be 1-64 letters, digits, '.', '_' or '-'")
    if name.startswith(CONFIG_TOKEN_PREFIX):
        raise KeyProblem(f"names starting with {CONFIG_TOKEN_PREFIX!r} are the configured api.tokens'")
    return name


def check_scope(scope: object) -> Scope:
    if scope not in SCOPES:
        raise KeyProblem(f"a key's scope must be one of {', '.join(SCOPES)}")
    return scope  # type: ignore[return-value]


NO_QUOTA = Quota()


def new_key(name: str, scope: Scope, created_at: str, quota: Quota = NO_QUOTA) -> tuple[KeyRecord, str]:
    """A key and its token (shown once: only its hash is kept)."""
    secret = secrets.token_urlsafe(SECRET_BYTES)
    salt = secrets.token_bytes(SALT_BYTES)
    record = KeyRecord(check_name(name), check_scope(scope), created_at, salt.hex(), _hash(secret, salt).hex(),
                       quota=quota)
    return record, f"{name}{SEPARATOR}{secret}"


def split_token(token: str) -> tuple[str, str] | None:
    """(name, secret) of a key's token; None for what is no key's token (a configured token, a typo)."""
    name, sep, secret = token.partition(SEPARATOR)
    if not sep or not NAME_RE.fullmatch(name) or not secret:
        return None
    return name, secret


def parse(value: bytes | None) -> KeyRecord | None:
    """A record of the keys topic; None for one that is not a key (the topic is uvrd's alone, so
    nothing but a bug or a forgery writes one)."""
    if (data := messages.json_object(value)) is None:
        return None
    name, scope, created_at = data.get("name"), data.get("scope"), data.get("created_at")
    if not isinstance(name, str) or not NAME_RE.fullmatch(name) or scope not in SCOPES or not isinstance(created_at, str):
        return None
    quota = _parse_quota(data.get("quota"))
    revoked_at = data.get("revoked_at")
    if isinstance(revoked_at, str):
        return KeyRecord(name, scope, created_at, revoked_at=revoked_at, quota=quota)
    salt, digest = data.get("salt"), data.get("digest")
    if data.get("kdf") != KDF or not isinstance(salt, str) or not isinstance(digest, str) \
            or not _is_hex(salt) or not _is_hex(digest):
        return None
    return KeyRecord(name, scope, created_at, salt, digest, quota=quota)


def _parse_quota(value: object) -> Quota:
    """A record's quota; a member no api would have written is left out (no limit), the key kept."""
    if not isinstance(value, dict):
        return Quota()
    fields: dict[str, int | None] = {}
    for field in QUOTA_FIELDS:
        try:
            fields[field] = check_quota_value(field, value.get(field))
        except KeyProblem:
            fields[field] = None
    return Quota(**fields)


def _hash(secret: str, salt: bytes) -> bytes:
    return hashlib.scrypt(secret.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)


def _is_hex(value: object) -> bool:
    if not isinstance(value, str) or not value:
        return False
    try:
        bytes.fromhex(value)
    except ValueError:
        return False
    return True
