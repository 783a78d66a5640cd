"""A request whose answer says it was recorded: the record is on Kafka first, or the answer is 503.

A cancellation and a deletion of stems are promises every api keeps once answered, so the answer
waits for the broker's acknowledgement; when Kafka does not take the record, or does not say
whether it did, the client is told to ask again, which is safe: both are idempotent.
"""

from __future__ import annotations

import structlog

from uvrd.api.backend import Backend, Unavailable
from uvrd.api.errors import ApiError
from uvrd.kafka.commit_mode import OutRecord

log = structlog.get_logger("uvrd.api")

RETRY_AFTER_S = "5"


def record_or_refuse(backend: Backend, record: OutRecord, what: str, meanwhile: str = "") -> None:
    """Send *record* and wait for its acknowledgement; else 503 saying the *what* (a noun: "the
    cancellation") was not recorded, what did not happen *meanwhile*, and that asking again is safe."""
    try:
        backend.send_and_wait(record)
    except Unavailable as e:
        log.error(f"{what.removeprefix('the ')} not recorded: Kafka did not take it", error=str(e),
                  ambiguous=e.ambiguous)
        maybe = " (it may have been recorded)" if e.ambiguous else ""
        raise ApiError(503, f"{what} could not be recorded{maybe}; {meanwhile}asking again is safe",
                       {"Retry-After": RETRY_AFTER_S}) from None
