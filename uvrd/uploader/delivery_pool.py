"""A bounded pool of threads for webhook deliveries.

A slow or hanging receiver holds one thread, not the uploader: the others go
on delivering.  The pool never touches Kafka.  The main loop submits work with
a :class:`Ticket` and collects each ticket back exactly once, finished with
the work's outcome or with the error it raised, so that no record can wait for
an answer that never comes.  Threads are daemons: a process that stops does
not wait for a delivery it has given up on.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Callable

import structlog

log = structlog.get_logger("uvrd.delivery_pool")


@dataclass(eq=False)
class Ticket:
    """One piece of work in the pool; *key* says what it is for (the main loop's business)."""

    key: Any
    label: str = ""
    started: float = field(default_factory=time.monotonic)
    # Set by the main loop when the work's outcome is no longer wanted (a stop's deadline, a lost
    # partition): the work ends at its next wait.
    abandon: threading.Event = field(default_factory=threading.Event)

    def age(self) -> float:
        return time.monotonic() - self.started


@dataclass(frozen=True)
class Finished:
    ticket: Ticket
    outcome: Any = None
    error: BaseException | None = None  # what the work raised instead of returning


class DeliveryPool:
    def __init__(self, size: int, name: str = "delivery"):
        if size < 1:
            raise ValueError("a pool needs at least one thread")
        self.size = size
        self._work: queue.SimpleQueue = queue.SimpleQueue()
        self._done: queue.SimpleQueue[Finished] = queue.SimpleQueue()
        self._in_flight: list[Ticket] = []  # the main loop's view: submitted, not yet collected
        for i in range(size):
            threading.Thread(target=self._run, name=f"{name}-{i}", daemon=True).start()

    def free(self) -> int:
        return self.size - len(self._in_flight)

    def in_flight(self) -> list[Ticket]:
        """Submitted and not yet collected, oldest first."""
        return list(self._in_flight)

    def submit(self, ticket: Ticket, work: Callable[[Ticket], Any]) -> Ticket:
        if not self.free():
            raise RuntimeError("the delivery pool is full")
        self._in_flight.append(ticket)
        self._work.put((ticket, work))
        return ticket

    def collect(self, wait: float = 0.0) -> list[Finished]:
        """The tickets finished since the last call (waiting up to *wait* seconds for the first)."""
        finished = []
        try:
            finished.append(self._done.get(timeout=wait) if wait > 0 else self._done.get_nowait())
            while True:
                finished.append(self._done.get_nowait())
        except queue.Empty:
            pass
        for f in finished:
            self._in_flight.remove(f.ticket)
        return finished

    def close(self) -> None:
        """End each thread once it is idle (a delivery in flight finishes or is abandoned first): a
        daemon run in a process that goes on (the service tests run it on a thread) leaves none behind."""
        for _ in range(self.size):
            self._work.put(None)

    def _run(self) -> None:
        while (item := self._work.get()) is not None:
            ticket, work = item
            try:
                done = Finished(ticket, outcome=work(ticket))
            except BaseException as e:  # the main loop decides what a crash of the work means
                log.error("delivery work raised", error_type=type(e).__name__, exc_info=True)
                done = Finished(ticket, error=e)
            self._done.put(done)
