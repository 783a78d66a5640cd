"""Signed, time-limited links to a task's stems.

A webhook receiver downloads its stems without holding an API token: the
link carries an expiry and an HMAC-SHA256 over task, stem and expiry, made
with ``api.link_secret``.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import quote, urlencode

from uvrd.peers import numbers as peer_numbers


def _signature(secret: str, task_uuid: str, stem: str, expires: int) -> str:
    message = f"{task_uuid}/{stem}/{expires}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def stem_path(task_uuid: str, stem: str) -> str:
    return f"/v1/tasks/{quote(task_uuid, safe='')}/stems/{quote(stem, safe='')}"


def stem_url(public_url: str, secret: str, task_uuid: str, stem: str, ttl: float, now: float | None = None) -> str:
    url = public_url.rstrip("/") + stem_path(task_uuid, stem)
    if not secret:
        return url
    expires = int((time.time() if now is None else now) + ttl)
    return f"{url}?{urlencode({'expires': expires, 'sig': _signature(secret, task_uuid, stem, expires)})}"


def verify(secret: str, task_uuid: str, stem: str, expires: str | None, sig: str | None,
           now: float | None = None) -> bool:
    deadline = peer_numbers.decimal(expires)
    if not secret or deadline is None or not isinstance(sig, str) or not sig:
        return False
    if deadline < (time.time() if now is None else now):
        return False
    # As bytes: compare_digest refuses str with non-ASCII characters, which a forged link may hold.
    return hmac.compare_digest(_signature(secret, task_uuid, stem, deadline).encode(), sig.encode("utf-8", "replace"))
