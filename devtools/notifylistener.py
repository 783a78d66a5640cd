"""The AF_UNIX datagram socket systemd listens on for sd_notify, for tests and benchmarks.

A thread timestamps every line as it arrives, so callers can ask what was
said, and when, without racing the daemon.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path


class NotifyListener:
    def __init__(self, path: Path | str):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            now = time.monotonic()
            with self._lock:
                self.messages.extend((now, line) for line in data.decode("latin-1").splitlines())

    def lines(self, since: float = 0.0) -> list[str]:
        with self._lock:
            return [line for t, line in self.messages if t >= since]

    def times(self, line: str, since: float = 0.0) -> list[float]:
        with self._lock:
            return [t for t, m in self.messages if m == line and t >= since]

    def first(self, predicate, since: float = 0.0) -> float | None:
        """When the first line since *since* matching *predicate* arrived, or None."""
        with self._lock:
            return next((t for t, m in self.messages if t >= since and predicate(m)), None)

    def statuses(self) -> list[str]:
        return [line[len("STATUS="):] for line in self.lines() if line.startswith("STATUS=")]

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        self._thread.join(1)


def toml_value(value) -> str:
    """A Python value as TOML, for the configs tests and benchmarks write."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return str(value)
