"""What every uvrd daemon shares: signals, the stop deadline, STATUS and WATCHDOG.

Signal handlers only record the signal; the daemon's own loop calls
:meth:`Lifecycle.process_signals` and does the work, one ``handle_*`` method
per signal (the gunicorn arbiter's pattern).  The first SIGTERM/SIGINT starts
a drain bounded by the drain window; a second one takes the quick path.
"""

from __future__ import annotations

import contextlib
import queue
import signal
import time

import structlog

from .notify import Notifier

log = structlog.get_logger("uvrd.lifecycle")

SIGNAL_NAMES = {signal.SIGTERM: "SIGTERM", signal.SIGINT: "SIGINT", signal.SIGHUP: "SIGHUP"}


class Lifecycle:
    def __init__(self, notifier: Notifier, drain_window: float):
        self.notifier = notifier
        self.drain_window = drain_window
        self._signals: queue.SimpleQueue[int] = queue.SimpleQueue()
        self.stop_requested_at: float | None = None
        self.deadline: float | None = None
        self.quick = False

    # -- signals --------------------------------------------------------
    @contextlib.contextmanager
    def signals_installed(self):
        previous = {sig: signal.signal(sig, self._record) for sig in SIGNAL_NAMES}
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _record(self, signum, frame) -> None:
        self._signals.put(signum)

    def process_signals(self) -> None:
        while True:
            try:
                signum = self._signals.get_nowait()
            except queue.Empty:
                return
            handler = {signal.SIGTERM: self.handle_term, signal.SIGINT: self.handle_int,
                       signal.SIGHUP: self.handle_hup}[signum]
            handler()

    def handle_term(self) -> None:
        self._request_stop("SIGTERM")

    def handle_int(self) -> None:
        self._request_stop("SIGINT")

    def handle_hup(self) -> None:
        log.info("SIGHUP ignored: restart the unit to apply a new configuration")

    def _request_stop(self, name: str) -> None:
        if self.stop_requested_at is None:
            self.stop_requested_at = time.monotonic()
            self.deadline = self.stop_requested_at + self.drain_window
            log.info("stop requested, draining", signal=name, drain_window_s=round(self.drain_window, 1))
            self.notifier.stopping("draining")
        elif not self.quick:
            self.quick = True
            log.warning("second stop signal: abandoning the job in flight", signal=name)

    # -- state ----------------------------------------------------------
    @property
    def stopping(self) -> bool:
        return self.stop_requested_at is not None

    def drain_left(self) -> float:
        if self.deadline is None:
            return float("inf")
        return max(0.0, self.deadline - time.monotonic())

    def must_abandon(self) -> bool:
        """True once a job in flight may no longer be waited for."""
        return self.quick or (self.stopping and self.drain_left() <= 0)

    def tick(self, status: str, healthy) -> None:
        """Once per loop turn: act on signals, report STATUS, ping the watchdog if ``healthy()``.

        *healthy* is a callable, asked only when a ping is due (the broker's costs a Kafka request).
        """
        self.process_signals()
        self.notifier.status(status)
        if self.notifier.watchdog_due() and healthy():
            self.notifier.watchdog()
