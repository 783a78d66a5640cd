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

from background import Background
from pipeline import Pipeline

# TimeoutStartSec: an engine hung while loading the model holds READY back forever otherwise.
START_TIMEOUT_S = 180.0


class Supervisor(Background):
    name = "supervisor"

    def __init__(self, pipeline: Pipeline, watchdog_s: float, note):
        super().__init__()
        self.p = pipeline
        self.watchdog_s = watchdog_s
        self.note = note
        self.counts: collections.Counter[str] = collections.Counter()
        self.unexpected_exits: list[str] = []
        self.lock = threading.Lock()  # held by whoever stops or starts a component

    def loop(self) -> None:
        while not self.stopping.wait(0.5):
            with self.lock:
                self.check()

    def check(self) -> None:
        for name, c in self.p.components.items():
            if c.daemon is None:
                continue
            if not c.running():
                # Only the fault injector stops daemons, and it restarts them under the lock.
                self.unexpected_exits.append(f"{name} exited with {c.daemon.proc.returncode}")
                self.note(f"supervisor: {name} exited with {c.daemon.proc.returncode}; restarting")
                self.p.start(name, wait=False)
            elif not c.daemon.notify.times("READY=1") and time.monotonic() - c.started_at > START_TIMEOUT_S:
                self._kill_and_restart(name, f"not ready after {START_TIMEOUT_S:g} s", "start_timeouts")
            elif self.watchdog_s and name != "api" and self._silent(c) > self.watchdog_s:
                self._kill_and_restart(name, "watchdog timeout", "watchdog_restarts")

    def _kill_and_restart(self, name: str, why: str, counter: str) -> None:
        self.note(f"supervisor: {name} {why}; killing and restarting")
        self.p.kill(name)
        self.counts[counter] += 1
        self.p.start(name, wait=False)

    def _silent(self, c) -> float:
        """Seconds since the daemon's last sign of life (READY counts as the first ping)."""
        notify = c.daemon.notify
        pings = notify.times("WATCHDOG=1") or notify.times("READY=1")
        return time.monotonic() - pings[-1] if pings else 0.0
