"""The fleet, kept in Kafka: each processor's heartbeat on a compacted topic keyed by its worker id.

A processor sends what it is (host, unit, version, device) and what it is doing (its state, the
models it holds and whether each is warm, its task and that task's progress) every
``processor.heartbeat_interval`` seconds and whenever its state or task changes; on a clean exit it
writes its key's tombstone.  Readers (``uvrd api``) count a worker alive while its last heartbeat
is younger than three intervals: one that died without a goodbye shows as lost until then.
"""

from __future__ import annotations

import json
import time
from datetime import datetime

from uvrd import messages
from uvrd.config import KafkaConfig
from uvrd.kafka.commit_mode import OutRecord
from uvrd.kafka.topic_view import TopicBoard

# Heartbeats missed before a worker counts as lost.
MISSED_BEATS = 3


def heartbeat(topic: str, worker: str, **fields) -> OutRecord:
    value = {"worker": worker, "updated_at": messages.now_iso(), **fields}
    return OutRecord(topic, worker.encode(), messages.encode(value))


def goodbye(topic: str, worker: str) -> OutRecord:
    return OutRecord(topic, worker.encode(), None)


class WorkerBoard(TopicBoard):
    """Every worker's latest heartbeat, from a background reader."""

    def __init__(self, kafka_config: KafkaConfig, topic: str, clock=time.time):
        super().__init__(kafka_config, topic)
        self._clock = clock
        self._workers: dict[str, dict] = {}

    def workers(self) -> list[dict]:
        """Each worker's heartbeat with ``alive`` and ``seconds_since`` added, alive ones first."""
        now = self._clock()
        with self._lock:
            beats = [dict(v) for v in self._workers.values()]
        for beat in beats:
            since = now - _epoch(beat.get("updated_at"))
            beat["seconds_since"] = round(max(since, 0.0), 1)
            beat["alive"] = since < MISSED_BEATS * float(beat.get("interval_s") or 10)
        return sorted(beats, key=lambda b: (not b["alive"], b.get("worker", "")))

    def fold(self, rec) -> None:
        """One record of the topic: a heartbeat, or a worker's goodbye (its tombstone)."""
        key, raw = rec.key, rec.value
        try:
            worker = key.decode()
        except (AttributeError, UnicodeDecodeError):
            return
        with self._lock:
            if raw is None:
                self._workers.pop(worker, None)
                return
            try:
                value = json.loads(raw)
            except ValueError:
                return
            if isinstance(value, dict):
                self._workers[worker] = value


def _epoch(iso: object) -> float:
    try:
        return datetime.fromisoformat(str(iso)).timestamp()
    except ValueError:
        return 0.0
