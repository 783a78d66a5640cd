"""Daemons run in the test process: ``ConsumerDaemon(config, handler).run()`` on a thread, the way
quix-streams runs ``app.run()`` in its own tests.  No interpreter start, no import of the daemon's
code, and the processor's engine can be one whose child is scripted (scripted_engine.py).

A stop is what SIGTERM does (:meth:`ConsumerDaemon.stop` records one), so the drain, the commits
and the shutdown order are the daemon's own; what needs a real signal, the watchdog or a process
death stays in tests/system/ with subprocess daemons."""

from __future__ import annotations

import threading

from support import patient, wait_until
from uvrd.config import Config
from uvrd.daemon.consumer_daemon import ConsumerDaemon


class InProcessDaemon:
    def __init__(self, config: Config, handler, environ: dict | None = None):
        self.handler = handler
        self.daemon = ConsumerDaemon(config, handler, environ={} if environ is None else environ)
        self.exit_code: int | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"uvrd-{handler.name}", daemon=True)

    def _run(self) -> None:
        try:
            self.exit_code = self.daemon.run()
        except BaseException as e:  # the test sees it in stop() or wait_ready()
            self.error = e

    def start(self) -> InProcessDaemon:
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def wait_ready(self, timeout: float = 120) -> InProcessDaemon:
        def ready():
            if not self.running:
                raise AssertionError(f"{self.handler.name} ended before READY: "
                                     f"exit {self.exit_code}, error {self.error!r}") from self.error
            return self.daemon.ready
        wait_until(ready, timeout, f"the in-process {self.handler.name} to be ready")
        return self

    def stop(self, timeout: float = 120) -> int:
        """Stop it as SIGTERM would and wait for run() to return; its exit status."""
        self.daemon.stop()
        return self.wait_exit(timeout)

    def wait_exit(self, timeout: float = 120) -> int:
        timeout = patient(timeout)
        self._thread.join(timeout)
        if self.running:
            raise AssertionError(f"the in-process {self.handler.name} still runs {timeout} s after its stop")
        if self.error is not None:
            raise self.error
        assert self.exit_code is not None
        return self.exit_code
