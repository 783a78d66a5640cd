"""What ``uvrd uploader`` counts: each webhook attempt (with its time), how each delivery ended, the
dead letters it wrote.

A delivery is counted when its outcome comes back from the pool, before the transaction that
commits it: the commit code stays free of metrics.  A partition lost before that commit has its
result delivered again by the next uploader, which counts it too: Prometheus sums both.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from uvrd.metrics import dead_letters
from uvrd.outcomes import Abandoned, Delivered, GaveUp

# An attempt is bounded by uploader.timeout (10 s by default).
ATTEMPTS = Histogram("uvrd_webhook_attempt_seconds", "Webhook attempts (_count) and their time, by result: "
                     "delivered, refused (a final 4xx or an unsafe URL), failed (retried unless it was the last)",
                     ["result"], buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
DELIVERIES = Counter("uvrd_webhook_deliveries", "Webhook deliveries by outcome (delivered, gave_up, abandoned) "
                     "and, for gave_up, reason", ["outcome", "reason"])


def attempted(result: str, seconds: float) -> None:
    ATTEMPTS.labels(result).observe(seconds)


def delivered(outcome: Delivered | GaveUp | Abandoned) -> None:
    """Count how a delivery ended; a given-up one is a dead letter (results.delivery_settlement)."""
    match outcome:
        case Delivered():
            DELIVERIES.labels("delivered", "").inc()
        case GaveUp(cause=cause):
            DELIVERIES.labels("gave_up", cause).inc()
            dead_letters.written("uploader", cause)
        case Abandoned():
            DELIVERIES.labels("abandoned", "").inc()


def unreadable_result() -> None:
    """A result message that could not be read: dead-lettered as it is (results.rejected_result)."""
    dead_letters.written("uploader", "unreadable_result")
