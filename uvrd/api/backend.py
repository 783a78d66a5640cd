"""One worker process's Kafka side: the task producer, the status board and
the readiness probe.

Each gunicorn worker builds its own after the fork (Kafka clients hold
threads and sockets a fork would not carry over).  Nothing here blocks
start-up on the broker: the producer connects on first use, so a worker
comes up, answers /healthz and says "not ready" while Kafka is away.
"""

from __future__ import annotations

import json
import threading
import time

import structlog
from kafka import KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from uvrd.config import Config
from uvrd.kafka import clients
from uvrd.boards import status
from uvrd.boards.cancellations import Cancellations
from uvrd.kafka.commit_mode import OutRecord
from uvrd.boards.status import StatusBoard
from uvrd.boards.dead_letters import DeadLetterBoard
from uvrd.boards.queues import QueueGauge
from uvrd.boards.workers import WorkerBoard
from uvrd.boards.idempotency import IdempotencyBoard
from uvrd.keys.board import KeyBoard

log = structlog.get_logger("uvrd.api")

# A request thread waits at most this long for the broker before its client gets a 503.
CONNECT_TIMEOUT_MS = 5000
PROBE_TIMEOUT_MS = 2000
PROBE_CACHE_S = 1.0
# Inside gunicorn's graceful timeout, after the requests in flight: the master kills a worker past it.
CLOSE_TIMEOUT_S = 3.0


class Unavailable(Exception):
    """Kafka did not take the record, or did not say whether it did (*ambiguous*)."""

    def __init__(self, message: str, ambiguous: bool = False):
        super().__init__(message)
        self.ambiguous = ambiguous


class Backend:
    def __init__(self, config: Config):
        self.config = config
        self.board = StatusBoard(config.kafka, config.topics.status)
        self.cancellations = Cancellations(config.kafka, config.topics.cancellations)
        self.workers = WorkerBoard(config.kafka, config.topics.workers)
        self.queues = QueueGauge(config)
        self.dead_letters = DeadLetterBoard(config.kafka, config.topics.dead_letter)
        self.keys = KeyBoard(config.kafka, config.topics.keys)
        self.idempotency = IdempotencyBoard(config.kafka, config.topics.idempotency)
        self._ends = None  # a consumer that only asks for end offsets (end_offsets)
        self._ends_lock = threading.Lock()
        self._producer: KafkaProducer | None = None
        self._producer_lock = threading.Lock()
        self._probe = None
        self._probe_lock = threading.Lock()
        self._probe_result: tuple[float, str | None] = (float("-inf"), "not probed yet")
        self._closed = False
        # The producer gives up on a record before the request stops waiting for it, so a 503
        # means the task was not queued (the client may retry without making a twin).
        self._delivery_timeout_ms = config.kafka.request_timeout_ms
        self._ack_wait_s = self._delivery_timeout_ms / 1000 + 5

    def start(self) -> Backend:
        self.board.start()
        self.cancellations.start()
        self.workers.start()
        self.dead_letters.start()
        self.keys.start()
        self.idempotency.start()
        return self

    def end_offsets(self, topic: str) -> dict[int, int]:
        """Each partition of *topic*: the offset past its last committed record (read_committed)."""
        with self._ends_lock:
            try:
                if self._ends is None:
                    self._ends = clients.consumer(self.config.kafka, group_id=None,
                                                  bootstrap_timeout_ms=CONNECT_TIMEOUT_MS)
                partitions = self._ends.partitions_for_topic(topic)
                if not partitions:
                    raise Unavailable(f"the topic {topic!r} does not exist")
                tps = [TopicPartition(topic, p) for p in sorted(partitions)]
                return {tp.partition: offset for tp, offset in self._ends.end_offsets(tps).items()}
            except KafkaError as e:
                raise Unavailable(f"cannot reach Kafka: {e}") from None

    # -- producing ---------------------------------------------------------
    def producer(self) -> KafkaProducer:
        with self._producer_lock:
            if self._closed:
                raise Unavailable("the server is shutting down")
            if self._producer is None:
                try:
                    self._producer = clients.producer(
                        self.config.kafka, bootstrap_timeout_ms=CONNECT_TIMEOUT_MS, max_block_ms=CONNECT_TIMEOUT_MS,
                        delivery_timeout_ms=self._delivery_timeout_ms)
                except KafkaError as e:
                    raise Unavailable(f"cannot reach Kafka: {e}") from None
                log.info("connected to Kafka")
            return self._producer

    def send_and_wait(self, record: OutRecord) -> None:
        """Produce *record* and wait for the broker's acknowledgement (acks=all)."""
        try:
            future = self.producer().send(record.topic, key=record.key, value=record.value)
        except KafkaError as e:
            raise Unavailable(str(e) or type(e).__name__) from None
        try:
            future.get(timeout=self._ack_wait_s)
        except KafkaError as e:
            # Sent but unacknowledged: the broker may have written it and lost only the answer.
            raise Unavailable(str(e) or type(e).__name__, ambiguous=True) from None

    def record_status(self, task_uuid: str, state: str, **fields) -> bool:
        """Fold the state in locally, send it and wait for the broker's acknowledgement: once this
        returns True, any api worker that reads the status topic through its end knows it
        (query.lookup).  False (logged) if Kafka did not take it."""
        record = status.record(self.config.topics.status, task_uuid, state, **fields)
        self.board.apply(json.loads(record.value))
        try:
            self.send_and_wait(record)
        except Unavailable as e:
            log.error("could not record the task's status", task_uuid=task_uuid, state=state, error=str(e),
                      ambiguous=e.ambiguous)
            return False
        return True

    # -- readiness ---------------------------------------------------------
    def not_ready_reason(self) -> str | None:
        """None when ready: Kafka answers now, the status board has caught up, and this worker's
        producer can send."""
        reason = self._probe_kafka()
        if reason:
            return reason
        if not self.board.caught_up:
            return f"the status of tasks is still loading from the topic {self.config.topics.status!r}"
        try:
            producer = self.producer()
        except Unavailable as e:
            return str(e)
        return self._producer_problem(producer)

    def _producer_problem(self, producer: KafkaProducer) -> str | None:
        """A producer's network I/O all happens in its sender thread: it must be running and answer a
        metadata round trip (kafka-python's internals, pinned below 4).  One whose thread has died
        can never send again and is replaced on next use; a stuck one keeps the api not ready, which
        the watchdog (uvrd/api/watchdog.py) turns into a restart if it lasts."""
        sender = producer._sender
        if not sender.is_alive():
            with self._producer_lock:
                if self._producer is producer:
                    self._producer = None
            log.error("the Kafka producer's I/O thread has stopped; a new producer is made on next use")
            try:
                producer.close(timeout=0)
            except KafkaError:
                pass
            return "the Kafka producer's I/O thread has stopped"
        answered = threading.Event()
        update = producer._metadata.request_update()
        update.add_both(lambda *_: answered.set())
        sender.wakeup()
        if not answered.wait(PROBE_TIMEOUT_MS / 1000):
            return f"the Kafka producer did not answer within {PROBE_TIMEOUT_MS / 1000:g} s"
        if update.failed():
            return f"the Kafka producer cannot reach Kafka: {update.exception}"
        return None

    def _probe_kafka(self) -> str | None:
        """A fresh metadata round trip, at most one at a time and once per PROBE_CACHE_S."""
        with self._probe_lock:
            checked, reason = self._probe_result
            if time.monotonic() - checked < PROBE_CACHE_S:
                return reason
            try:
                if self._probe is None:
                    self._probe = clients.consumer(self.config.kafka, group_id=None,
                                                    bootstrap_timeout_ms=PROBE_TIMEOUT_MS)
                self._probe.bootstrap(timeout_ms=PROBE_TIMEOUT_MS, refresh=True)
                reason = None
            except KafkaError as e:
                reason = f"Kafka does not answer: {e}"
            self._probe_result = (time.monotonic(), reason)
            return reason

    # -- shutdown ----------------------------------------------------------
    def close(self) -> None:
        """Flush what is still buffered (status records), then close every client."""
        with self._producer_lock:
            self._closed = True
            producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.flush(timeout=CLOSE_TIMEOUT_S)
            except KafkaError as e:
                log.warning("could not flush the producer", error=str(e) or type(e).__name__)
            producer.close(timeout=CLOSE_TIMEOUT_S)
        with self._probe_lock:
            if self._probe is not None:
                self._probe.close(autocommit=False)
                self._probe = None
        self.board.stop()
        self.cancellations.stop()
        self.workers.stop()
        self.queues.close()
        self.dead_letters.stop()
        self.keys.stop()
        self.idempotency.stop()
        with self._ends_lock:
            if self._ends is not None:
                self._ends.close(autocommit=False)
                self._ends = None
