"""The webhook events tasks opted into (started, progress, requeued): read from topics.events and
posted, signed like the final delivery, each once at most.

Best effort, by design, and apart from the results: one attempt within EVENT_TIMEOUT_S, in the
order a task's events were published; an event older than MAX_AGE_S when it is read (an uploader
was down) is dropped, as what it said is stale.  Offsets are committed automatically in the relay's
own consumer group, so an event is never posted twice by a restart but may be lost to one.  Nothing
here touches the results' deliveries or their commits: the final webhook keeps its exactly-once
guarantee whatever happens to an event.
"""

from __future__ import annotations

import json
import threading
from datetime import datetime, UTC

import structlog

from uvrd import messages
from uvrd.peers import safehttp
from uvrd.config import Config
from uvrd.kafka import clients, group_leave
from uvrd.runtime.deadline import Deadline
from uvrd.uploader import webhook

log = structlog.get_logger("uvrd.uploader.events")

EVENT_TIMEOUT_S = 5.0
MAX_AGE_S = 300.0
EVENT_HEADER = "X-Uvrd-Event"
POLL_MS = 200
RETRY_S = 5.0
CLOSE_TIMEOUT_S = 5.0


class EventRelay:
    def __init__(self, config: Config):
        self.config = config
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="events", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        """Ask the relay to end; an event being posted may outlast *timeout* (the thread is a daemon's)."""
        self._stopping.set()
        if self._thread.is_alive():  # never started when the daemon stopped before it connected
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._relay()
            except Exception as e:  # the broker away, say: the results' deliveries go on; events resume
                log.warning("webhook events paused", error=f"{type(e).__name__}: {e}"[:300], retry_in_s=RETRY_S)
                self._stopping.wait(RETRY_S)

    def _relay(self) -> None:
        consumer = clients.consumer(self.config.kafka, f"{self.config.uploader.group_id}-events",
                                    enable_auto_commit=True, isolation_level="read_uncommitted", max_poll_records=50)
        try:
            consumer.subscribe([self.config.topics.events])
            while not self._stopping.is_set():
                for records in consumer.poll(timeout_ms=POLL_MS).values():
                    for record in records:
                        if self._stopping.is_set():
                            return
                        self.post(record.value, record.offset)
        finally:
            group_leave.close(consumer, Deadline.after(CLOSE_TIMEOUT_S), commit=True)

    def post(self, raw: bytes | None, offset: int) -> bool:
        """One event posted to its task's hook: True if the receiver answered 2xx."""
        event = _parse(raw)
        if event is None:
            log.warning("an unreadable webhook event was skipped", offset=offset)
            return False
        if _age_s(event) > MAX_AGE_S:
            return False
        payload = messages.encode({k: v for k, v in event.items() if k != "hook_url"})
        headers = {"Content-Type": "application/json", "User-Agent": "uvrd-uploader", EVENT_HEADER: event["event"],
                   "Idempotency-Key": f"{event['task_uuid']}/{event['event']}/{offset}"}
        secret = self.config.uploader.webhook_secret
        if secret:
            headers[webhook.SIGNATURE_HEADER] = webhook.sign(secret, payload)
        try:
            response = safehttp.request("POST", event["hook_url"], body=payload, headers=headers,
                                        allow_private=self.config.api.allow_private_urls,
                                        deadline=Deadline.after(EVENT_TIMEOUT_S), max_bytes=4096)
        except Exception as e:  # whatever a receiver does, or a hook that cannot be called: this event only
            log.info("webhook event not delivered", task_uuid=event["task_uuid"], event=event["event"],
                     error=f"{type(e).__name__}: {e}"[:300])
            return False
        return 200 <= response.status < 300


def _parse(raw: bytes | None) -> dict | None:
    try:
        event = json.loads(raw) if raw else None
    except (ValueError, RecursionError):
        return None
    if not isinstance(event, dict) or event.get("event") not in messages.EVENTS:
        return None
    if not isinstance(event.get("task_uuid"), str) or not isinstance(event.get("hook_url"), str):
        return None
    return event


def _age_s(event: dict) -> float:
    try:
        stamp = datetime.fromisoformat(str(event.get("timestamp")).replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return (datetime.now(UTC) - stamp).total_seconds()
