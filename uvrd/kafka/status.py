"""Where each task stands, kept in Kafka: no database.

A compacted topic keyed by task_uuid.  Every component appends the task's
state as it moves it (api: queued; processor: processing, then succeeded or
failed, in the same transaction as the result; uploader: delivered or
delivery_failed, in the same transaction as its offset).  Each record
carries what its writer knows, and readers merge them, so the API instances
on every host agree without talking to each other.
"""

from __future__ import annotations

import json
import threading

import structlog
from kafka import TopicPartition

from uvrd import messages
from uvrd.config import KafkaConfig
from uvrd.kafka import clients
from uvrd.kafka.commit_mode import OutRecord

log = structlog.get_logger("uvrd.status")

# A state never goes back: a late "queued" must not hide "processing".
RANK = {"queued": 0, "processing": 1, "succeeded": 2, "failed": 2, "delivered": 3, "delivery_failed": 3}
STATES = tuple(RANK)


def record(topic: str, task_uuid: str, state: str, **fields) -> OutRecord:
    assert state in RANK, state
    value = {"task_uuid": task_uuid, "state": state, "updated_at": messages.now_iso(),
             **{k: v for k, v in fields.items() if v is not None}}
    return OutRecord(topic, task_uuid.encode(), messages.encode(value))


def merge(current: dict | None, update: dict) -> dict:
    if current is None:
        return dict(update)
    if RANK.get(update.get("state"), -1) < RANK.get(current.get("state"), -1):
        return {**update, **current}  # a late, older state only fills gaps
    return {**current, **update}


class StatusBoard:
    """An in-memory view of the status topic, kept current by a background reader."""

    def __init__(self, kafka_config: KafkaConfig, topic: str):
        self.kafka_config = kafka_config
        self.topic = topic
        self._states: dict[str, dict] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._caught_up = threading.Event()
        self._thread = threading.Thread(target=self._run, name="status-reader", daemon=True)

    def start(self) -> "StatusBoard":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def get(self, task_uuid: str) -> dict | None:
        with self._lock:
            state = self._states.get(task_uuid)
            return dict(state) if state else None

    def apply(self, value: dict) -> None:
        """Fold in a state this process wrote itself, before the reader sees it come back."""
        with self._lock:
            self._states[value["task_uuid"]] = merge(self._states.get(value["task_uuid"]), value)

    @property
    def caught_up(self) -> bool:
        return self._caught_up.is_set()

    def wait_caught_up(self, timeout: float) -> bool:
        return self._caught_up.wait(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._read()
            except Exception as e:  # the reader must outlive a broker outage
                log.warning("status reader failed, restarting it", error=str(e) or type(e).__name__)
                self._stop.wait(2)

    def _read(self) -> None:
        consumer = clients.consumer(self.kafka_config, group_id=None, max_poll_records=500)
        try:
            partitions = None
            while partitions is None and not self._stop.is_set():
                partitions = consumer.partitions_for_topic(self.topic)
                if partitions is None:
                    self._stop.wait(1)
            tps = [TopicPartition(self.topic, p) for p in sorted(partitions or ())]
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            end = consumer.end_offsets(tps)
            while not self._stop.is_set():
                for batch in consumer.poll(timeout_ms=500).values():
                    for rec in batch:
                        self._fold(rec.value)
                if not self._caught_up.is_set() and all(consumer.position(tp) >= end[tp] for tp in tps):
                    self._caught_up.set()
        finally:
            consumer.close(autocommit=False)

    def _fold(self, raw: bytes | None) -> None:
        try:
            value = json.loads(raw)
            task_uuid = value["task_uuid"]
        except (TypeError, ValueError, KeyError):
            return  # not ours to judge; the status topic is written only by uvrd
        with self._lock:
            self._states[task_uuid] = merge(self._states.get(task_uuid), value)
