"""One result's webhook delivery: its attempts, the backoff between them, and how it ended.

It runs in one of the uploader's delivery threads and touches no Kafka client:
it returns a typed outcome, and the uploader's main loop commits it.

Rule: nothing a receiver answers ends the uploader.  A network error, a 5xx,
a 429, an exchange over ``uploader.timeout`` (the whole attempt: connect, send,
every byte of the answer) and any error nobody foresaw in one attempt are a
failed attempt: retried with backoff up to ``uploader.max_attempts``, then
given up.  A webhook that cannot even be built is given up at once.  Either
way the reason is short, bounded text that goes into the dead-letter record.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from collections.abc import Callable

import structlog
import urllib3

from uvrd import messages
from uvrd.peers import numbers as peer_numbers, safehttp
from uvrd.config import UploaderConfig
from uvrd.metrics import uploader as uploader_metrics
from uvrd.outcomes import Abandoned, Delivered, DeliveryOutcome, GaveUp
from uvrd.runtime.backoff import Backoff
from uvrd.runtime.deadline import Deadline
from uvrd.uploader import webhook

log = structlog.get_logger("uvrd.uploader")

USER_AGENT = "uvrd-uploader"
MAX_ANSWER_BYTES = 64 * 1024
# A reason rides in the dead-letter record's headers and the status record: a peer's error text
# (a 64 KiB status line, say) must not make those records too large to commit.
MAX_REASON_CHARS = 500


@dataclass(frozen=True)
class Failed:
    """One attempt that failed and may be retried."""

    reason: str
    retry_after: float | None = None  # what the receiver asked for, in seconds


class WebhookSender:
    """Delivers results' webhooks; safe to share between threads."""

    def __init__(self, cfg: UploaderConfig, allow_private: bool, link: Callable[[str, str, str], str],
                 retention: float | None = None):
        """*retention*: api.result_retention, for the body's expires_at."""
        self.cfg = cfg
        self.allow_private = allow_private
        self.link = link
        self.retention = retention

    def deliver(self, result: dict, abandon: threading.Event) -> DeliveryOutcome:
        """Deliver *result*; Abandoned as soon as *abandon* is set during a backoff wait."""
        try:
            payload = webhook.body(result, self.link, self.retention)
        except Exception as e:
            log.warning("the webhook body could not be built", error_type=type(e).__name__)
            return GaveUp(0, f"the webhook body could not be built: {describe(e)}", "unbuildable")
        reason = ""
        for attempt in range(1, self.cfg.max_attempts + 1):
            began = time.monotonic()
            answer = self._attempt(result, payload, attempt)
            uploader_metrics.attempted(_result_word(answer), time.monotonic() - began)
            if not isinstance(answer, Failed):
                return answer
            reason = answer.reason
            if attempt == self.cfg.max_attempts:
                break
            delay = self.backoff(attempt, answer.retry_after)
            log.info("webhook delivery failed, retrying", attempt=attempt, reason=reason, retry_in_s=round(delay, 2))
            if abandon.wait(delay):
                return Abandoned("the delivery was abandoned")
        suffix = f" (after {self.cfg.max_attempts} attempts)"
        return GaveUp(self.cfg.max_attempts, _bounded(reason, MAX_REASON_CHARS - len(suffix)) + suffix)

    def _attempt(self, result: dict, payload: bytes, attempt: int) -> Delivered | GaveUp | Failed:
        """One POST: Delivered, GaveUp (final) or Failed (may be retried)."""
        try:
            headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
                       "Idempotency-Key": messages.delivery_id(result["task_uuid"], messages.replay_of(result)),
                       "X-Uvrd-Delivery-Attempt": str(attempt),
                       "X-Uvrd-Event": "final"}  # beside the events a task may opt into (events.py)
            if self.cfg.webhook_secret:
                headers[webhook.SIGNATURE_HEADER] = webhook.sign(self.cfg.webhook_secret, payload)
            response = safehttp.request("POST", result["hook_url"], body=payload, headers=headers,
                                        allow_private=self.allow_private, deadline=Deadline.after(self.cfg.timeout),
                                        max_bytes=MAX_ANSWER_BYTES)
            if 200 <= response.status < 300:
                return Delivered(attempt, response.status)
            reason = f"the webhook answered HTTP {response.status}"
            if response.status != 429 and response.status < 500:
                return GaveUp(attempt, reason, "refused")
            return Failed(reason, _retry_after(response.headers, self.cfg.backoff_max))
        except safehttp.UnsafeURL as e:
            return GaveUp(attempt, _bounded(f"hook_url refused: {e}"), "unsafe_url")
        except (urllib3.exceptions.HTTPError, OSError, safehttp.TooLarge, safehttp.DeadlineExceeded) as e:
            return Failed(describe(e))
        except Exception as e:
            # Nothing a peer answers may end the uploader: what nobody foresaw is a failed attempt too.
            log.warning("unexpected error in a delivery attempt", attempt=attempt, error_type=type(e).__name__,
                        error=describe(e), exc_info=True)
            return Failed(f"unexpected {describe(e)}")

    def backoff(self, attempt: int, retry_after: float | None) -> float:
        """Exponential with full jitter; a server's Retry-After is honoured up to backoff_max."""
        delay = Backoff(self.cfg.backoff_initial, self.cfg.backoff_max).jittered(attempt)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.cfg.backoff_max))
        return delay


def _result_word(answer: Delivered | GaveUp | Failed) -> str:
    """An attempt's result label: delivered, refused (final: a 4xx, an unsafe URL) or failed (may be retried)."""
    return {Delivered: "delivered", GaveUp: "refused", Failed: "failed"}[type(answer)]


def describe(e: BaseException) -> str:
    """The exception's type and message, bounded in length."""
    try:
        text = str(e)
    except Exception:
        text = ""
    return _bounded(f"{type(e).__name__}: {text}" if text else type(e).__name__)


def _bounded(text: str, limit: int = MAX_REASON_CHARS) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _retry_after(headers: dict, cap: float) -> float | None:
    value = {k.lower(): v for k, v in headers.items()}.get("retry-after")
    return peer_numbers.retry_after(value, time.time(), cap)
