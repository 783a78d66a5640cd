"""The lifecycle every consuming uvrd daemon shares (processor, uploader).

- connect to Kafka, retrying until it answers or a stop comes; READY=1 only then;
- a poll loop that never blocks long, so an idle daemon stops at once;
- one record at a time; while its work runs, every partition stays assigned
  but paused and the consumer keeps polling, so long work costs no rebalance;
- a rebalance that takes the busy partition away abandons the work, one that
  gives it back lets the work go on;
- nothing is committed for a record whose partition a rebalance gave to another
  member since the record was taken (a commit waits out a rebalance in progress);
- the result of the work commits with the record's offset (delivery.py),
  retried until it succeeds or the drain deadline passes;
- the shutdown order is explicit: consumer (leaving the group), producer,
  then whatever the subclass started first.

A subclass supplies :meth:`start` (its own resources), :meth:`handle` (one
record) and may add to :meth:`status` and :meth:`healthy`.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from dataclasses import dataclass, field

import kafka.errors as Errors
import structlog
from kafka import ConsumerRebalanceListener, TopicPartition

from . import drain, group_leave, kafka_io, logs
from .config import Config
from .deadline import Deadline
from .delivery import AtLeastOnce, CommitLost, ExactlyOnce, OutRecord
from .lifecycle import Lifecycle
from .notify import Notifier

log = structlog.get_logger("uvrd.daemon")

POLL_MS = 200            # bounds how long an idle daemon takes to notice a stop
KEEPALIVE_POLL_MS = 100  # polls while work runs: membership only, partitions paused
CLOSE_TIMEOUT_S = 5.0


@dataclass
class Taken:
    """The record being handled, from the moment it is taken to its commit, and what rebalances
    did to its partition meanwhile."""

    tp: TopicPartition
    offset: int
    task_uuid: str | None = None
    started: float = field(default_factory=time.monotonic)  # the current run of its work
    working: bool = False  # inside working_on(): every partition paused
    revoked: bool = False  # revoked by a rebalance that has not finished yet
    lost: bool = False     # some rebalance since the record was taken gave the partition to another member

    def age(self) -> float:
        return time.monotonic() - self.started


@dataclass(frozen=True)
class Abandoned:
    """Work given up by the daemon's own choice (a stop, a lost partition): left uncommitted for redelivery."""

    reason: str


def default_transactional_id(role: str, environ) -> str:
    """Stable per unit, so a restarted daemon fences the zombie of its previous run."""
    unit = drain.own_unit() if environ.get("INVOCATION_ID") else None
    where = unit.removesuffix(".service") if unit else f"pid{os.getpid()}"
    return f"uvrd-{role}-{socket.gethostname()}-{where}"


class ConsumerDaemon:
    name = "daemon"

    def __init__(self, config: Config, *, group_id: str, topics: list[str], drain_timeout: float,
                 broker_timeout: float, exactly_once: bool, transactional_id: str, environ=None):
        environ = os.environ if environ is None else environ
        self.config = config
        self.group_id = group_id
        self.topics = topics
        self.broker_timeout = broker_timeout
        self.exactly_once = exactly_once
        self.transactional_id = transactional_id
        self.notifier = Notifier()
        self.lifecycle = Lifecycle(self.notifier, drain.drain_window(drain_timeout, environ))
        self.consumer = None
        self.delivery = None
        self.taken: Taken | None = None
        self.ready = False
        self._connected_at = 0.0

    # -- what a subclass provides ------------------------------------------
    def start(self, stack: contextlib.ExitStack) -> bool:
        """Start the daemon's own resources (closed last); False if a stop came first."""
        return True

    def before_poll(self) -> bool:
        """Called before each poll while idle; False ends the loop."""
        return True

    def handle(self, record) -> None:
        raise NotImplementedError

    def status(self) -> str:
        if self.inflight is not None:
            doing = self.busy_status()
            if self.lifecycle.stopping:
                return f"draining: {doing}, {self.lifecycle.drain_left():.0f} s left"
            return doing
        if self.lifecycle.stopping:
            return "stopping"
        if self.consumer is None:
            return "waiting for the broker"
        return "idle"

    def busy_status(self) -> str:
        return f"working on {self.inflight.task_uuid} for {self.inflight.age():.0f} s"

    def healthy(self) -> bool:
        return self.ready and self.broker_silence() < self.broker_timeout

    def ready_fields(self) -> dict:
        return {}

    # -- run -----------------------------------------------------------------
    def run(self) -> int:
        with contextlib.ExitStack() as stack:
            stack.enter_context(self.lifecycle.signals_installed())
            if not self.start(stack) or not self._connect(stack):
                return 0
            self.ready = True
            self.notifier.ready(self.status())
            log.info(f"{self.name} ready", topics=self.topics, group_id=self.group_id,
                     delivery=self.delivery.mode, drain_window_s=round(self.lifecycle.drain_window, 1),
                     session_timeout_ms=self.config.kafka.session_timeout_ms, **self.ready_fields())
            self._loop()
            log.info(f"{self.name} stopping: closing its clients")
        log.info(f"{self.name} stopped")
        return 0

    def _connect(self, stack: contextlib.ExitStack) -> bool:
        """Connect to Kafka, retrying until it answers or a stop is requested."""
        backoff = 0.5
        attempts = 0
        while True:
            attempts += 1
            log.info("connecting to the broker", bootstrap_servers=self.config.kafka.bootstrap_servers,
                     attempt=attempts)
            attempt = _Attempt(self._open_clients)
            while not attempt.wait(POLL_MS / 1000):
                self.tick()
                if self.lifecycle.stopping:
                    return False  # the attempt's thread ends with the process
            try:
                self.consumer, self.delivery = attempt.result()
            except Errors.KafkaError as e:
                log.warning("broker not reachable, retrying", bootstrap_servers=self.config.kafka.bootstrap_servers,
                            error=str(e) or type(e).__name__, retry_in_s=backoff)
                if not self.pause_for(backoff, drain=False):
                    return False
                backoff = min(backoff * 2, 10.0)
                continue
            self._connected_at = time.monotonic()
            # Closed in reverse: the consumer first (it leaves the group, so
            # its partitions move at once), then the producer.
            stack.callback(self.delivery.close, CLOSE_TIMEOUT_S)
            stack.callback(self._close_consumer)
            return True

    def _open_clients(self):
        """The consumer, subscribed, and the delivery, open; KafkaError if the broker does not answer."""
        consumer = kafka_io.consumer(self.config.kafka, self.group_id)
        try:
            consumer.subscribe(self.topics, listener=_Rebalance(self))
            delivery = (ExactlyOnce if self.exactly_once else AtLeastOnce)(self._make_producer, consumer)
            delivery.open()
        except BaseException:
            consumer.close(autocommit=False, timeout_ms=1000)
            raise
        return consumer, delivery

    def _close_consumer(self) -> None:
        group_leave.close(self.consumer, Deadline.after(CLOSE_TIMEOUT_S))

    def _make_producer(self):
        return kafka_io.producer(self.config.kafka, self.transactional_id if self.exactly_once else None)

    def _loop(self) -> None:
        while True:
            self.tick()
            if self.lifecycle.stopping or not self.before_poll():
                return
            records = self.consumer.poll(timeout_ms=POLL_MS, max_records=1)
            for batch in records.values():
                for record in batch:
                    if self.lifecycle.stopping:
                        return  # not committed: redelivered to whoever owns the partition next
                    logs.bind_task(topic=record.topic, partition=record.partition, offset=record.offset)
                    self.taken = Taken(TopicPartition(record.topic, record.partition), record.offset)
                    try:
                        self.handle(record)
                    finally:
                        self.taken = None
                    logs.bind_task()

    # -- shared helpers --------------------------------------------------------
    def tick(self) -> None:
        self.lifecycle.tick(self.status(), self.healthy)

    def broker_silence(self) -> float:
        """Seconds since the group coordinator last answered a heartbeat.

        kafka-python's public metric counts heartbeats *sent*, which go on
        while the broker is silent; the answer time is what shows the broker
        is reachable.
        """
        heartbeat = getattr(getattr(self.consumer, "_coordinator", None), "heartbeat", None)
        answered = getattr(heartbeat, "last_receive", float("-inf"))
        return time.monotonic() - max(answered, self._connected_at)

    def pause_for(self, seconds: float, drain: bool) -> bool:
        """Wait while ticking; False once a stop ends the wait (at the drain deadline if *drain*)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.tick()
            if self.lifecycle.must_abandon() or (self.lifecycle.stopping and not drain):
                return False
            if self.consumer is not None:
                self.keep_membership()
            else:
                time.sleep(min(0.2, max(0.0, end - time.monotonic())))
        return True

    def keep_membership(self, timeout_ms: int = KEEPALIVE_POLL_MS) -> None:
        """Poll with every partition paused: heartbeats and rebalances proceed, no records come."""
        self.consumer.pause(*self.consumer.assignment())
        try:
            records = self.consumer.poll(timeout_ms=timeout_ms)
        finally:
            if self.inflight is None:
                self.consumer.resume(*self.consumer.paused())
        for tp, batch in records.items():
            # Cannot happen with every partition paused; if it does, rewind so nothing is skipped.
            self.consumer.seek(tp, batch[0].offset)

    @property
    def inflight(self) -> Taken | None:
        """The taken record while work on it runs."""
        taken = self.taken
        return taken if taken is not None and taken.working else None

    @contextlib.contextmanager
    def working_on(self, record, task_uuid: str | None):
        """Run work on the taken *record*, with every partition paused until it ends."""
        taken = self.taken
        assert taken is not None and (taken.tp.topic, taken.tp.partition, taken.offset) == \
            (record.topic, record.partition, record.offset), "work only on the record the loop took"
        taken.task_uuid, taken.started, taken.working = task_uuid, time.monotonic(), True
        self.consumer.pause(*self.consumer.assignment())
        try:
            yield taken
        finally:
            taken.working = False
            self.consumer.resume(*self.consumer.paused())

    def commit(self, out: list[OutRecord], offsets) -> bool:
        """Commit *out* with *offsets*, retrying; False if it could not be done (left for redelivery)."""
        backoff = 0.5
        while True:
            if not self._still_held():
                log.warning("partition lost before the commit; another member redoes the record")
                return False
            try:
                self.delivery.commit(out, offsets)
                return True
            except CommitLost as e:
                log.warning("partition lost before the commit; another member redoes the record", error=str(e))
                return False
            except Errors.KafkaError as e:
                log.warning("commit failed, retrying", error=str(e) or type(e).__name__, retry_in_s=backoff)
                if not self.pause_for(backoff, drain=True):
                    log.warning("stop deadline reached before the commit succeeded; left for redelivery")
                    return False
                backoff = min(backoff * 2, 10.0)

    def _still_held(self) -> bool:
        """Whether the record's partition is still ours, once any rebalance in progress is over.

        The broker checks the group generation of a transactional offset commit, not who owns
        the partition: a member that has joined the next generation but not yet learnt that
        its partition went elsewhere would commit a record the new owner is redoing.
        """
        taken = self.taken
        while taken is not None and taken.revoked and not taken.lost:
            if not self.pause_for(KEEPALIVE_POLL_MS / 1000, drain=True):
                return False
        return taken is None or not taken.lost

    def on_revoked(self, revoked) -> None:
        log.info("partitions revoked", partitions=sorted(f"{tp.topic}/{tp.partition}" for tp in revoked))
        if self.taken is not None and self.taken.tp in revoked:
            self.taken.revoked = True

    def on_assigned(self, assigned) -> None:
        log.info("partitions assigned", partitions=sorted(f"{tp.topic}/{tp.partition}" for tp in assigned))
        taken = self.taken
        if taken is not None and taken.revoked:
            taken.revoked = False
            taken.lost = taken.lost or taken.tp not in assigned
            if not taken.lost:
                # Ours again: a new assignment starts at the committed offset, which is still this
                # record's; its work goes on (or its commit is on the way), so skip past it.
                self.consumer.seek(taken.tp, taken.offset + 1)
        if taken is not None and taken.working:
            self.consumer.pause(*assigned)


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, daemon: ConsumerDaemon):
        self.daemon = daemon

    def on_partitions_revoked(self, revoked):
        self.daemon.on_revoked(revoked)

    def on_partitions_assigned(self, assigned):
        self.daemon.on_assigned(assigned)


class _Attempt:
    """One try at opening the Kafka clients, on a thread of its own, so that the daemon's loop goes
    on acting on signals meanwhile: kafka-python waits for a broker that does not answer for up to
    bootstrap_timeout_ms (30 s) in each client's constructor, and init_transactions longer.  A stop
    leaves the try behind; the thread is a daemon thread and ends with the process."""

    def __init__(self, open_clients):
        self._done = threading.Event()
        self._result = self._error = None
        threading.Thread(target=self._run, args=(open_clients,), name="kafka-connect", daemon=True).start()

    def _run(self, open_clients) -> None:
        try:
            self._result = open_clients()
        except BaseException as e:
            self._error = e
        finally:
            self._done.set()

    def wait(self, seconds: float) -> bool:
        """Whether the try has ended, waiting up to *seconds* for it."""
        return self._done.wait(seconds)

    def result(self):
        if self._error is not None:
            raise self._error
        return self._result
