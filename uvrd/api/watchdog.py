"""READY, STATUS, WATCHDOG and STOPPING for ``uvrd api``, from the gunicorn master.

gunicorn's master says ``READY=1`` as soon as it listens, before any worker has built its
application, and it knows nothing of Kafka; and its workers could wedge (a hung producer, every
thread stuck) while the master goes on happily.  So :class:`ApiServer` hides ``NOTIFY_SOCKET`` from
gunicorn and its workers, and this module speaks for the api instead.

Before forking each worker the master opens a private loopback listener for it; the worker accepts
on it beside the public socket (uvrd/api/worker.py).  Every few seconds the master asks each worker
``GET /readyz`` there, a step per turn of its loop and never blocking (uvrd/api/probe.py): an answer
needs the worker's loop, a free thread, the application, Kafka, the status board and the producer,
which is what queueing a task needs.  ``READY=1`` once every worker has answered ready; ``WATCHDOG=1``
while every worker answered ready within ``api.ready_timeout`` (a worker younger than that gets
the time to boot), so a Kafka outage shorter than that does not get the api restarted, and a
wedged worker does.  ``STATUS=`` says what is wrong, ``STOPPING=1`` on SIGTERM or SIGINT.
"""

from __future__ import annotations

import socket
import time

import structlog
from gunicorn.arbiter import Arbiter
from gunicorn.errors import HaltServer

from uvrd.api.probe import ProbeAnswer, ReadinessProbe
from uvrd.boards.topic_check import BackgroundCheck
from uvrd.config import EX_CONFIG
from uvrd.runtime.notify import Notifier

log = structlog.get_logger("uvrd.api")

# Once a second until READY; then a sixth of api.ready_timeout (at most 5 s): each probe costs the
# worker a thread for a moment and Kafka two metadata requests.
STARTING_INTERVAL_S = 1.0
MAX_INTERVAL_S = 5.0
# /readyz itself waits at most a few seconds for Kafka (backend.PROBE_TIMEOUT_MS, CONNECT_TIMEOUT_MS).
PROBE_TIMEOUT_S = 10.0
# How often the master's loop turns while a probe is on its way (gunicorn's own turn is 1 s).
BUSY_TURN_S = 0.1


class WorkerHealth:
    """What the master knows of one worker's readiness, and the listener it asks it through."""

    def __init__(self, listener: socket.socket):
        self.listener = listener
        self.address = listener.getsockname()[:2]
        self.born = time.monotonic()
        self.last_ready: float | None = None
        self.reason = "no answer yet"
        self.probe: ReadinessProbe | None = None
        self.next_probe = 0.0

    def step(self, now: float, interval: float) -> None:
        if self.probe is None:
            if now < self.next_probe:
                return
            self.probe = ReadinessProbe(self.address, PROBE_TIMEOUT_S)
        answer = self.probe.poll()
        if answer is not None:
            self._record(answer, now, interval)

    def _record(self, answer: ProbeAnswer, now: float, interval: float) -> None:
        self.drop_probe()
        self.next_probe = now + interval
        if answer.ready:
            self.last_ready = now
        self.reason = answer.reason

    def healthy(self, now: float, grace: float) -> bool:
        return now - (self.born if self.last_ready is None else self.last_ready) < grace

    def drop_probe(self) -> None:
        if self.probe is not None:
            self.probe.close()
            self.probe = None

    def close(self) -> None:
        self.drop_probe()
        self.listener.close()


def private_listener() -> socket.socket:
    """On loopback, on a port of the kernel's choosing: only this host can reach it."""
    try:
        listener = socket.create_server(("127.0.0.1", 0), backlog=8)
    except OSError:  # a host without IPv4 loopback
        listener = socket.create_server(("::1", 0), family=socket.AF_INET6, backlog=8)
    return listener


class ApiWatchdog:
    def __init__(self, notifier: Notifier, ready_timeout: float):
        self.notifier = notifier
        self.ready_timeout = ready_timeout
        self.interval = min(MAX_INTERVAL_S, ready_timeout / 6)
        self.workers: dict[int, WorkerHealth] = {}  # by gunicorn's worker age: known before the fork
        self.ready_sent = False
        self.pinging = True
        self.last_status = ""

    @property
    def active(self) -> bool:
        return self.notifier.enabled

    # -- gunicorn's hooks ----------------------------------------------------
    def before_fork(self, worker) -> None:
        if self.active:
            health = WorkerHealth(private_listener())
            self.workers[worker.age] = health
            worker.probe_listener = health.listener

    def in_child(self, worker) -> None:
        """In the new worker: the master's copies of its siblings' listeners and probes are not its own."""
        for age, health in self.workers.items():
            if age != worker.age:
                health.close()
        self.workers.clear()

    def forget(self, worker) -> None:
        health = self.workers.pop(worker.age, None)
        if health is not None:
            health.close()

    # -- the master's loop ---------------------------------------------------
    def busy(self) -> bool:
        return any(h.probe is not None for h in self.workers.values())

    def step(self, ages) -> None:
        if not self.active:
            return
        now = time.monotonic()
        healths = [self.workers[age] for age in ages if age in self.workers]
        if not healths:
            return
        for health in healths:
            health.step(now, self.interval if self.ready_sent else min(self.interval, STARTING_INTERVAL_S))
        if not self.ready_sent:
            if all(h.last_ready is not None for h in healths):
                self.ready_sent = True
                self.last_status = "ready"
                self.notifier.ready("ready")
                log.info("api ready", workers=len(healths))
            else:
                self.notifier.status("starting: " + _worst(healths).reason)
            return
        self._report(healths, now)

    def _report(self, healths: list[WorkerHealth], now: float) -> None:
        lagging = [h for h in healths if h.reason]
        status = "ready" if not lagging else f"not ready: {lagging[0].reason}"
        if status != self.last_status:
            if lagging:
                log.warning("api not ready", reason=lagging[0].reason, workers_not_ready=len(lagging))
            else:
                log.info("api ready again")
            self.last_status = status
        self.notifier.status(status)
        healthy = all(h.healthy(now, self.ready_timeout) for h in healths)
        if healthy:
            self.notifier.watchdog()
        elif self.pinging:
            log.error("api not ready for longer than api.ready_timeout: watchdog pings stop, systemd restarts it",
                      reason=_worst(healths).reason, ready_timeout_s=self.ready_timeout)
        self.pinging = healthy

    def stopping(self) -> None:
        if not self.active:
            return
        self.notifier.stopping("draining")
        # The master's stop loop takes no more steps: a probe left open would hold its worker's
        # graceful exit until the head deadline's linger (2 s), waiting for a request never sent.
        for health in self.workers.values():
            health.drop_probe()


def _worst(healths: list[WorkerHealth]) -> WorkerHealth:
    return min(healths, key=lambda h: h.last_ready if h.last_ready is not None else float("-inf"))


class ApiArbiter(Arbiter):
    """gunicorn's master, with two more steps per turn of its loop: the watchdog's, and the end of
    the topic check that started before Kafka answered (uvrd/boards/topic_check.py)."""

    def __init__(self, app, watchdog: ApiWatchdog, topics: BackgroundCheck):
        self.watchdog = watchdog
        self.topics = topics
        super().__init__(app)

    def manage_workers(self):
        if (problem := self.topics.problem) is not None:
            # The line for the operator; then gunicorn stops the workers and exits with 78.
            log.error(str(problem), missing_topics=list(problem.topics))
            self.watchdog.stopping()
            raise HaltServer("a Kafka topic the api needs does not exist", EX_CONFIG)
        super().manage_workers()
        self.watchdog.step([w.age for w in self.WORKERS.values()])

    def wait_for_signals(self, timeout=1.0):
        return super().wait_for_signals(BUSY_TURN_S if self.watchdog.busy() else timeout)

    def handle_term(self):
        self.watchdog.stopping()
        super().handle_term()

    def handle_int(self):
        self.watchdog.stopping()
        super().handle_int()

    def handle_quit(self):
        self.watchdog.stopping()
        super().handle_quit()


# gunicorn server hooks (settings in uvrd/api/server.py): the arbiter they get is an ApiArbiter.
def pre_fork(arbiter, worker) -> None:
    arbiter.watchdog.before_fork(worker)


def post_fork(arbiter, worker) -> None:
    arbiter.watchdog.in_child(worker)


def child_exit(arbiter, worker) -> None:
    arbiter.watchdog.forget(worker)
