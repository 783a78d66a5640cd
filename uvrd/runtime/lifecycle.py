"""What every uvrd daemon shares: signals, the stop deadline, STATUS and WATCHDOG.

Signal handlers only record the signal; the daemon's own loop calls
:meth:`Lifecycle.process_signals` and does the work, one ``handle_*`` method
per signal (the gunicorn arbiter's pattern).

Its phases (:class:`Phase`): RUNNING until the first SIGTERM/SIGINT; then DRAINING,
bounded by the drain window; then ABANDONING, once the window ends or a second
signal asks for the quick path.  Work in flight may go on while draining and
must end while abandoning.
"""

from __future__ import annotations

import contextlib
import enum
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType

import structlog

from uvrd.runtime.notify import Notifier

log = structlog.get_logger("uvrd.lifecycle")

SIGNAL_NAMES = {signal.SIGTERM: "SIGTERM", signal.SIGINT: "SIGINT", signal.SIGHUP: "SIGHUP"}


class Phase(enum.Enum):
    RUNNING = "running"
    DRAINING = "draining"        # stop requested: no new work, the work in flight may finish
    ABANDONING = "abandoning"    # the drain window is over, or a second signal came


class Lifecycle:
    def __init__(self, notifier: Notifier, drain_window: float, clock: Callable[[], float] = time.monotonic):
        self.notifier = notifier
        self.drain_window = drain_window
        self.clock = clock
        self._signals: queue.SimpleQueue[int] = queue.SimpleQueue()
        self.stop_requested_at: float | None = None
        self.deadline: float | None = None
        self.quick = False

    # -- signals --------------------------------------------------------
    @contextlib.contextmanager
    def signals_installed(self) -> Iterator[Lifecycle]:
        """The handlers, while the daemon runs.  Only the main thread may install them: a daemon run
        on another thread (the service tests run it in their own process) is stopped by
        :meth:`request_stop` alone."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {sig: signal.signal(sig, self._record) for sig in SIGNAL_NAMES}
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _record(self, signum: int, frame: FrameType | None) -> None:
        self._signals.put(signum)

    def request_stop(self) -> None:
        """A stop from within the process, from any thread: recorded as a SIGTERM would be, and acted
        on by the daemon's loop in the same way (a second call is the quick path)."""
        self._signals.put(signal.SIGTERM)

    def process_signals(self) -> None:
        while True:
            try:
                signum = self._signals.get_nowait()
            except queue.Empty:
                return
            handlers: dict[int, Callable[[], None]] = {signal.SIGTERM: self.handle_term, signal.SIGINT: self.handle_int,
                                                       signal.SIGHUP: self.handle_hup}
            handlers[signum]()

    def handle_term(self) -> None:
        self._request_stop("SIGTERM")

    def handle_int(self) -> None:
        self._request_stop("SIGINT")

    def handle_hup(self) -> None:
        log.info("SIGHUP ignored: restart the unit to apply a new configuration")

    def _request_stop(self, name: str) -> None:
        if self.stop_requested_at is None:
            self.stop_requested_at = self.clock()
            self.deadline = self.stop_requested_at + self.drain_window
            log.info("stop requested, draining", signal=name, drain_window_s=round(self.drain_window, 1))
            self.notifier.stopping("draining")
        elif not self.quick:
            self.quick = True
            log.warning("second stop signal: abandoning the job in flight", signal=name)

    # -- state ----------------------------------------------------------
    @property
    def phase(self) -> Phase:
        if self.stop_requested_at is None:
            return Phase.RUNNING
        if self.quick or self.drain_left() <= 0:
            return Phase.ABANDONING
        return Phase.DRAINING

    @property
    def stopping(self) -> bool:
        return self.stop_requested_at is not None

    def drain_left(self) -> float:
        if self.deadline is None:
            return float("inf")
        return max(0.0, self.deadline - self.clock())

    def must_abandon(self) -> bool:
        """True once a job in flight may no longer be waited for."""
        return self.phase is Phase.ABANDONING

    def tick(self, status: str, healthy: Callable[[], bool]) -> None:
        """Once per loop turn: act on signals, report STATUS, ping the watchdog if ``healthy()``.

        *healthy* is a callable, asked only when a ping is due (the broker's costs a Kafka request).
        """
        self.process_signals()
        self.notifier.status(status)
        if self.notifier.watchdog_due() and healthy():
            self.notifier.watchdog()
