"""``uvrd uploader``: deliver each result to its webhook, exactly one success or one dead letter.

It consumes results (``read_committed``), POSTs the callback to the task's
``hook_url`` (through the SSRF checks, signed, with the task_uuid as
idempotency key), retries network errors, 5xx and 429 with exponential
backoff and jitter, and finally either records the delivery or puts the
result on the dead-letter topic.  The offset moves only in the same
transaction as that record.  A stop lets the delivery in flight go on inside
the drain window, then leaves it uncommitted for the next uploader.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import time
from dataclasses import dataclass

import structlog
import urllib3

from . import messages, peer_numbers, safehttp, status, webhook
from .config import Config
from .consumer_daemon import Abandoned, ConsumerDaemon, default_transactional_id
from .delivery import dead_letter, next_offset
from .storage import Storage, open_storage

log = structlog.get_logger("uvrd.uploader")

USER_AGENT = "uvrd-uploader"


@dataclass(frozen=True)
class Delivered:
    attempts: int
    status: int


@dataclass(frozen=True)
class GaveUp:
    attempts: int
    reason: str


class Uploader(ConsumerDaemon):
    name = "uploader"

    def __init__(self, config: Config, environ=None):
        environ = os.environ if environ is None else environ
        cfg = config.uploader
        super().__init__(
            config, group_id=cfg.group_id, topics=[config.topics.results], drain_timeout=cfg.drain_timeout,
            broker_timeout=cfg.broker_timeout, exactly_once=True,
            transactional_id=cfg.transactional_id or default_transactional_id("uploader", environ),
            environ=environ,
        )
        self.cfg = cfg
        self.storage = open_storage(config)
        self._next_sweep = 0.0

    def start(self, stack: contextlib.ExitStack) -> bool:
        if not self.cfg.webhook_secret:
            log.warning("uploader.webhook_secret is empty: webhooks go out unsigned")
        return True

    def before_poll(self) -> bool:
        self._sweep_if_due()
        return True

    def busy_status(self) -> str:
        return f"delivering {self.inflight.task_uuid} for {self.inflight.age():.0f} s"

    def ready_fields(self) -> dict:
        return {"transactional_id": self.transactional_id}

    # -- one result ----------------------------------------------------------
    def handle(self, record) -> None:
        try:
            result = _parse_result(record.value, self.storage)
        except ValueError as e:
            log.warning("result rejected", error=str(e))
            self.commit([dead_letter(self.config.topics.dead_letter, record, str(e), "uploader")],
                        next_offset(record))
            return
        task_uuid = result["task_uuid"]
        structlog.contextvars.bind_contextvars(task_uuid=task_uuid)
        if not result.get("hook_url"):
            if self.commit([], next_offset(record)):
                log.info("no hook_url: nothing to deliver")
            return
        with self.working_on(record, task_uuid):
            outcome = self._deliver(result)
        if isinstance(outcome, Abandoned):
            log.info("delivery left uncommitted for redelivery", reason=outcome.reason)
            return
        if isinstance(outcome, Delivered):
            out = [status.record(self.config.topics.status, task_uuid, "delivered", delivered_at=messages.now_iso(),
                                 delivery_attempts=outcome.attempts)]
        else:
            error = f"webhook delivery failed: {outcome.reason}"
            out = [dead_letter(self.config.topics.dead_letter, record, error, "uploader"),
                   status.record(self.config.topics.status, task_uuid, "delivery_failed", delivery_error=error,
                                 delivery_attempts=outcome.attempts)]
        if self.commit(out, next_offset(record)):
            if isinstance(outcome, Delivered):
                log.info("webhook delivered", attempts=outcome.attempts, http_status=outcome.status)
            else:
                log.warning("webhook dead-lettered", attempts=outcome.attempts, reason=outcome.reason)

    def _deliver(self, result: dict) -> Delivered | GaveUp | Abandoned:
        payload = webhook.body(result, self.storage.link)
        reason = ""
        for attempt in range(1, self.cfg.max_attempts + 1):
            headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
                       "Idempotency-Key": result["task_uuid"], "X-Uvrd-Delivery-Attempt": str(attempt)}
            if self.cfg.webhook_secret:
                headers[webhook.SIGNATURE_HEADER] = webhook.sign(self.cfg.webhook_secret, payload)
            retry_after = None
            try:
                response = safehttp.request("POST", result["hook_url"], body=payload, headers=headers,
                                            allow_private=self.config.api.allow_private_urls, timeout=self.cfg.timeout,
                                            max_bytes=64 * 1024)
            except safehttp.UnsafeURL as e:
                return GaveUp(attempt, f"hook_url refused: {e}")
            except (urllib3.exceptions.HTTPError, OSError, safehttp.TooLarge) as e:
                reason = f"{type(e).__name__}: {e}"
            else:
                if 200 <= response.status < 300:
                    return Delivered(attempt, response.status)
                reason = f"the webhook answered HTTP {response.status}"
                if response.status != 429 and response.status < 500:
                    return GaveUp(attempt, reason)
                retry_after = _retry_after(response.headers, self.cfg.backoff_max)
            if attempt == self.cfg.max_attempts:
                break
            delay = self._backoff(attempt, retry_after)
            log.info("webhook delivery failed, retrying", attempt=attempt, reason=reason, retry_in_s=round(delay, 2))
            if not self.pause_for(delay, drain=True) or self.inflight.lost:
                return Abandoned("stopping" if self.lifecycle.stopping else "the partition moved to another uploader")
        return GaveUp(self.cfg.max_attempts, f"{reason} (after {self.cfg.max_attempts} attempts)")

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        """Exponential with full jitter; a server's Retry-After is honoured up to backoff_max."""
        ceiling = min(self.cfg.backoff_max, self.cfg.backoff_initial * 2 ** (attempt - 1))
        delay = random.uniform(ceiling / 2, ceiling)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.cfg.backoff_max))
        return delay

    def _sweep_if_due(self) -> None:
        now = time.monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + self.cfg.retention_interval
        self.storage.sweep()


def _parse_result(raw: bytes | None, storage: Storage | None = None) -> dict:
    """The result, checked; *storage* (default: the local backend's rules) judges its stem references."""
    if raw is None:
        raise ValueError("result message is empty (a tombstone)")
    if len(raw) > messages.MAX_MESSAGE_BYTES:
        raise ValueError(f"result message is {len(raw)} bytes, over the {messages.MAX_MESSAGE_BYTES}-byte limit")
    try:
        result = json.loads(raw)
    except UnicodeDecodeError as e:
        raise ValueError(f"result message is not UTF-8 ({e.reason} at byte {e.start})") from None
    except RecursionError:
        raise ValueError("result message is JSON nested too deeply") from None
    except ValueError as e:
        raise ValueError(f"result message is not JSON: {type(e).__name__}") from None
    if not isinstance(result, dict):
        raise ValueError("result message must be a JSON object")
    try:
        # A lone surrogate escape ("\ud800") is valid JSON but cannot go into a URL or a webhook body.
        json.dumps(result, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("result message holds text that is not valid Unicode (a lone surrogate escape)") from None
    except RecursionError:
        raise ValueError("result message is JSON nested too deeply") from None
    task_uuid = result.get("task_uuid")
    if not isinstance(task_uuid, str) or not messages.TASK_UUID_RE.fullmatch(task_uuid):
        raise ValueError("result has no valid task_uuid")
    if result.get("hook_url") is not None and not isinstance(result["hook_url"], str):
        raise ValueError("result field 'hook_url' must be a string or null")
    if not isinstance(result.get("success"), bool):
        raise ValueError("result field 'success' must be true or false")
    stems = result.get("stems") or {}
    if not isinstance(stems, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in stems.items()):
        raise ValueError("result field 'stems' must map stem names to paths")
    kind = result.get("storage", "local")
    if kind not in messages.STORAGE_KINDS:
        raise ValueError(f"result field 'storage' must be one of {', '.join(messages.STORAGE_KINDS)}")
    ours = storage.name if storage is not None else "local"
    # A failure names no object, so it is delivered whichever backend its processor used.
    if stems and kind != ours:
        raise ValueError(f"result's stems are in {kind} storage, but this uploader is configured for {ours} "
                         f"storage (storage.backend)")
    for name, ref in stems.items():
        problem = storage.ref_problem(ref) if storage is not None else None
        if problem:
            raise ValueError(f"result's stem {name[:100]!r} has a key that {problem}")
    return result


def _retry_after(headers: dict, cap: float) -> float | None:
    value = {k.lower(): v for k, v in headers.items()}.get("retry-after")
    return peer_numbers.retry_after(value, time.time(), cap)
