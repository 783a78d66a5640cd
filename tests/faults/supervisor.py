"""What systemd does for the units, for daemons the suite runs as plain processes.

``Restart=on-failure`` brings back a daemon that exited on its own, and
``WatchdogSec=`` kills (then restarts) one whose WATCHDOG=1 pings stop: that is
how a hung separation engine is healed in production, so the suite heals it
the same way instead of pretending the processor does.
"""

from __future__ import annotations

import collections
import threading
import time

from pipeline import Pipeline


class Supervisor:
    def __init__(self, pipeline: Pipeline, watchdog_s: float, note):
        self.p = pipeline
        self.watchdog_s = watchdog_s
        self.note = note
        self.counts: collections.Counter[str] = collections.Counter()
        self.unexpected_exits: list[str] = []
        self.lock = threading.Lock()  # held by whoever stops or starts a component
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="supervisor", daemon=True)
        self.error: BaseException | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(300)
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        try:
            while not self._stop.wait(0.5):
                with self.lock:
                    self.check()
        except BaseException as e:  # surfaced by stop(), in the test's thread
            self.error = e

    def check(self) -> None:
        for name, c in self.p.components.items():
            if c.daemon is None:
                continue
            if not c.running():
                # Only the fault injector stops daemons, and it restarts them under the lock.
                self.unexpected_exits.append(f"{name} exited with {c.daemon.proc.returncode}")
                self.note(f"supervisor: {name} exited with {c.daemon.proc.returncode}; restarting")
                self.p.start(name, wait=False)
            elif self.watchdog_s and name != "api" and self._silent(c) > self.watchdog_s:
                self.note(f"supervisor: {name} watchdog timeout; killing and restarting")
                self.p.kill(name)
                self.counts["watchdog_restarts"] += 1
                self.p.start(name, wait=False)

    def _silent(self, c) -> float:
        """Seconds since the daemon's last sign of life (READY counts as the first ping)."""
        notify = c.daemon.notify
        pings = notify.times("WATCHDOG=1") or notify.times("READY=1")
        return time.monotonic() - pings[-1] if pings else 0.0

