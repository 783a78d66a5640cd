"""The lifecycle every consuming uvrd daemon shares (processor, uploader).

- the handler's own resources start first (the processor's model loads and warms up);
- connect to Kafka, retrying until it answers or a stop comes, and check that every topic the
  daemon uses exists (boards/topic_check.py: exit status 78 if not); READY=1 only then;
- the handler serves: it takes records through the :class:`~uvrd.kafka.group_member.GroupMember`,
  and every wait of its goes through :meth:`Runtime.wait` (signals, STATUS=, WATCHDOG=, the
  group membership);
- the shutdown order is one ExitStack: the consumer (leaving the group where a leave cannot strand
  it, group_leave.py, so its partitions move at once), the producer, then whatever the handler
  started.

A handler is not a subclass: it is given the runtime and the member, and supplies
:class:`Handler`'s few methods.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from dataclasses import dataclass
from typing import Protocol

import kafka.errors as Errors
import structlog

from uvrd.boards import topic_check
from uvrd.config import EX_CONFIG, Config
from uvrd.kafka import clients
from uvrd.kafka.commit_mode import PRODUCER_BOUNDS, AtLeastOnce, ExactlyOnce
from uvrd.kafka.group_member import GroupMember
from uvrd.metrics import drain as metrics_drain
from uvrd.metrics import exposition
from uvrd.runtime import drain
from uvrd.runtime.backoff import Backoff
from uvrd.runtime.lifecycle import Lifecycle
from uvrd.runtime.notify import Notifier
from uvrd.runtime.wait import Runtime

log = structlog.get_logger("uvrd.daemon")

POLL_MS = 200            # bounds how long an idle daemon takes to notice a stop
CONNECT_BACKOFF_S = (0.5, 10.0)


@dataclass(frozen=True)
class Membership:
    """What a daemon is to the group: which group, which topics, how it commits."""

    group_id: str
    topics: list[str]
    exactly_once: bool
    transactional_id: str
    drain_timeout: float
    broker_timeout: float

    @classmethod
    def of(cls, role: str, cfg, topics: list[str], exactly_once: bool, environ=None) -> Membership:
        """From a daemon's config section (group_id, transactional_id, drain_timeout, broker_timeout);
        the transactional id defaults to one stable per unit."""
        environ = os.environ if environ is None else environ
        return cls(cfg.group_id, topics, exactly_once, cfg.transactional_id or default_transactional_id(role, environ),
                   cfg.drain_timeout, cfg.broker_timeout)


class Handler(Protocol):
    name: str
    membership: Membership

    def start(self, stack: contextlib.ExitStack, runtime: Runtime) -> bool:
        """Start the handler's own resources (closed last); False if a stop came first."""

    def join(self, member: GroupMember) -> None:
        """Connected: the member to work through (its rebalance hooks are the handler's)."""

    def serve(self) -> None:
        """Take and handle records until a stop; every wait through the runtime."""

    def activity(self) -> str | None:
        """What it is doing now, for STATUS= (None: idle)."""

    def healthy(self) -> bool:
        """Whether its own part works, for WATCHDOG=."""

    def ready_fields(self) -> dict:
        """Extra fields of the "ready" log line."""

    def on_assigned(self, assigned) -> None:
        """A rebalance gave it *assigned* (the member's claims are settled already)."""

    def on_revoked(self, revoked) -> None:
        """A rebalance begins: *revoked* may go to another member."""

    def on_lost(self, claim) -> None:
        """*claim*'s partition went to another member: its work must not be committed."""


def default_transactional_id(role: str, environ) -> str:
    """Stable per unit, so a restarted daemon fences the zombie of its previous run."""
    unit = drain.own_unit() if environ.get("INVOCATION_ID") else None
    where = unit.removesuffix(".service") if unit else f"pid{os.getpid()}"
    return f"uvrd-{role}-{socket.gethostname()}-{where}"


class ConsumerDaemon:
    def __init__(self, config: Config, handler: Handler, environ=None):
        environ = self.environ = os.environ if environ is None else environ
        self.config = config
        self.handler = handler
        self.membership = handler.membership
        self.notifier = Notifier()
        self.lifecycle = Lifecycle(self.notifier, drain.drain_window(self.membership.drain_timeout, environ))
        # A handler may also have on_turn(): a step of its own, once a turn of every wait, that must not block.
        self.runtime = Runtime(self.lifecycle, self.status, self.healthy,
                               on_turn=getattr(handler, "on_turn", lambda: None))
        self.member: GroupMember | None = None
        self.ready = False

    def status(self) -> str:
        doing = self.handler.activity()
        if doing:
            if self.lifecycle.stopping:
                return f"draining: {doing}, {self.lifecycle.drain_left():.0f} s left"
            return doing
        if self.lifecycle.stopping:
            return "stopping"
        if self.member is None:
            return "waiting for the broker"
        if (lasted := self.member.rebalance_overdue()) is not None:
            return f"waiting for the consumer group {self.membership.group_id} to form: {lasted:.0f} s"
        # A handler may say more of its idle state (the processor: its model and where it runs).
        return getattr(self.handler, "idle", lambda: "idle")()

    def stop(self) -> None:
        """Ask :meth:`run` to drain and return, as a SIGTERM does (safe from any thread)."""
        self.lifecycle.request_stop()

    def healthy(self) -> bool:
        # Ready means connected, so the member is there: the None check only tells mypy so.
        return (self.ready and self.member is not None and self.member.silence() < self.membership.broker_timeout
                and self.handler.healthy())

    def run(self) -> int:
        name, m = self.handler.name, self.membership
        metrics_drain.watch(self.lifecycle)
        exposition.serve(getattr(self.config, name).metrics_listen, self.environ)
        with contextlib.ExitStack() as stack:
            stack.enter_context(self.lifecycle.signals_installed())
            if not self.handler.start(stack, self.runtime):
                return 0
            try:
                member = self._connect(stack)
            except topic_check.TopicsMissing as e:
                # One line for the operator: which topics, and how to create them.  78: the unit's
                # RestartPreventExitStatus, since a restart cannot create them.
                log.error(str(e), missing_topics=list(e.topics))
                return EX_CONFIG
            if member is None:
                return 0
            # The journal line before READY: whoever sees READY (systemd, a test, an operator's
            # `systemctl start`) finds the line that says with which settings it is ready.
            log.info(f"{name} ready", topics=m.topics, group_id=m.group_id,
                     commit=member.commit_mode.mode, drain_window_s=round(self.lifecycle.drain_window, 1),
                     session_timeout_ms=self.config.kafka.session_timeout_ms, **self.handler.ready_fields())
            self.ready = True
            self.notifier.ready(self.status())
            self.handler.serve()
            log.info(f"{name} stopping: closing its clients")
        log.info(f"{name} stopped")
        return 0

    def _connect(self, stack: contextlib.ExitStack) -> GroupMember | None:
        """Connect to Kafka, retrying until it answers (the member) or a stop is requested (None)."""
        backoff = Backoff(*CONNECT_BACKOFF_S)
        attempts = 0
        while True:
            attempts += 1
            log.info("connecting to the broker", bootstrap_servers=self.config.kafka.bootstrap_servers,
                     attempt=attempts)
            attempt = _Attempt(self._open_member)
            if not self.runtime.wait(until=lambda: attempt.wait(POLL_MS / 1000), through_drain=False,
                                     turn_ms=0).done:
                return None  # the attempt's thread ends with the process
            try:
                member = attempt.result()
            except Errors.KafkaError as e:
                wait = backoff.next()
                log.warning("broker not reachable, retrying", bootstrap_servers=self.config.kafka.bootstrap_servers,
                            error=str(e) or type(e).__name__, retry_in_s=wait)
                if not self.runtime.pause(wait, through_drain=False):
                    return None
                continue
            stack.callback(member.close)
            self.member = self.runtime.member = member
            self.handler.join(member)
            return member

    def _open_member(self) -> GroupMember:
        """A member, subscribed, its commit mode open; KafkaError if the broker does not answer,
        TopicsMissing if a topic the daemon uses does not exist."""
        m = self.membership
        topic_check.check(self.config, self.handler.name)
        consumer = clients.consumer(self.config.kafka, m.group_id)
        try:
            # Bounds on the constructor's bootstrap, init_transactions and a send waiting for metadata:
            # a commit holds the loop for a bounded time (commit_mode.py).
            make_producer = lambda: clients.producer(self.config.kafka,  # noqa: E731
                                                      m.transactional_id if m.exactly_once else None,
                                                      **PRODUCER_BOUNDS)
            commit_mode = (ExactlyOnce if m.exactly_once else AtLeastOnce)(make_producer, consumer)
            # The first rebalance comes in a poll, after join() has given the handler the member.
            member = GroupMember(consumer, commit_mode, self.runtime, on_assigned=self.handler.on_assigned,
                                 on_revoked=self.handler.on_revoked, on_lost=self.handler.on_lost)
            member.subscribe(m.topics)
            commit_mode.open()
        except BaseException:
            consumer.close(autocommit=False, timeout_ms=1000)
            raise
        return member


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
