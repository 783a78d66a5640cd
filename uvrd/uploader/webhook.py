"""The webhook a user receives: its body and its signature.

Body: the old service's callback fields (task_uuid, status: success, failed
or cancelled, timestamp, vocals, instrumental, error_message) plus a stems
map (stem values are signed, time-limited download links), the name of
the API key that submitted the task (key) and when its stems and input are
deleted (expires_at: finished_at plus api.result_retention).

Signature: ``X-Uvrd-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>." + body>``
with ``uploader.webhook_secret``.  A receiver recomputes it over the raw body,
compares in constant time and refuses timestamps outside its replay window.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time

from uvrd import messages
from uvrd.peers import numbers as peer_numbers
from uvrd.storage.retention import expires_at, iso

SIGNATURE_HEADER = "X-Uvrd-Signature"
REPLAY_WINDOW_S = 300


def body(result: dict, link, retention: float | None = None) -> bytes:
    """*link(task_uuid, stem, ref)* makes each stem's URL: the storage backend's (Storage.link).
    ``replay`` is there only for a replayed task or result.  *retention*: api.result_retention, for
    ``expires_at`` (null without it, or for a result that does not say when it finished)."""
    task_uuid = result["task_uuid"]
    stems = {name: link(task_uuid, name, ref) for name, ref in (result.get("stems") or {}).items()}
    payload = {
        "task_uuid": task_uuid,
        "status": "success" if result.get("success") else "cancelled" if result.get("cancelled") else "failed",
        "timestamp": messages.now_iso(),
        "vocals": stems.get("vocals"),
        "instrumental": stems.get("instrumental"),
        "stems": stems,
        "error_message": result.get("error_message"),
        "key": result.get("key"),  # the API key that submitted the task; null for a task from before keys
        "expires_at": _expires_at(result, retention),
    }
    if replay := messages.replay_of(result):
        payload["replay"] = replay  # an operator's replay of a dead letter (uvrd/boards/replays.py)
    return json.dumps(payload, separators=(",", ":")).encode()


def _expires_at(result: dict, retention: float | None) -> str | None:
    expiry = expires_at(result, retention) if retention is not None else None
    return iso(expiry) if expiry is not None else None


def sign(secret: str, payload: bytes, now: float | None = None) -> str:
    t = int(time.time() if now is None else now)
    digest = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def verify(secret: str, header: str | None, payload: bytes, now: float | None = None,
           window: float = REPLAY_WINDOW_S) -> bool:
    """What a receiver does: signature over the raw body, and a fresh timestamp."""
    if not header:
        return False
    parts = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
    t, given = peer_numbers.decimal(parts.get("t")), parts.get("v1", "")
    if t is None or abs((time.time() if now is None else now) - t) > window:
        return False
    expected = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    # As bytes: compare_digest refuses str with non-ASCII characters, which a forged header may hold.
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace"))
