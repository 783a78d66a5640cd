"""sd_notify: READY / STATUS / WATCHDOG / STOPPING to systemd.

A no-op outside systemd (no NOTIFY_SOCKET) and it never raises: a daemon
must not fail because its supervisor went away.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping

import sdnotify


class Notifier:
    def __init__(self) -> None:
        # sdnotify reads NOTIFY_SOCKET from the process environment itself.
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self._notifier = sdnotify.SystemdNotifier() if self.enabled else None
        self.watchdog_interval = _watchdog_interval(os.environ)
        self._last_status: str | None = None
        self._last_ping = float("-inf")

    def send(self, *lines: str) -> None:
        if self._notifier is None:
            return
        # sdnotify encodes latin-1; a task name must not turn a notification into an exception.
        payload = "\n".join(lines).encode("latin-1", "replace").decode("latin-1")
        try:
            self._notifier.notify(payload)
        except Exception:
            pass

    def ready(self, status: str) -> None:
        self._last_status = status
        self.send("READY=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        if status != self._last_status:
            self._last_status = status
            self.send(f"STATUS={status}")

    def stopping(self, status: str) -> None:
        self._last_status = status
        self.send("STOPPING=1", f"STATUS={status}")

    def watchdog_due(self) -> bool:
        """Whether a ping would go out now: a health check that costs something is asked only then."""
        return self.watchdog_interval is not None and time.monotonic() - self._last_ping >= self.watchdog_interval

    def watchdog(self) -> None:
        """Ping, at most twice per WatchdogSec; call it only when healthy."""
        if self.watchdog_due():
            self._last_ping = time.monotonic()
            self.send("WATCHDOG=1")


def _watchdog_interval(environ: Mapping[str, str]) -> float | None:
    """Half of WatchdogSec, as sd_watchdog_enabled(3) recommends; None if off."""
    usec = environ.get("WATCHDOG_USEC")
    pid = environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2e6 if value > 0 else None
