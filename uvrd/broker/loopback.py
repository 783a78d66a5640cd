"""Local servers that uvrd starts as child processes: a free port for each, waiting until one
listens, and stopping one by its PID."""

from __future__ import annotations

import functools
import random
import signal
import socket
import subprocess
import time
from pathlib import Path


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing is bound to, for a server this process is about to start.  Drawn from below the
    kernel's ephemeral range where there is room: a port from inside it can be taken by any outgoing
    connection between this check and the server's bind (CI saw weed's filer stop on "address already
    in use" that way)."""
    low = _ephemeral_low()
    # A range starting too low to leave room below it: the kernel's pick (bind to port 0).
    draws = (_draw.randrange(max(1024, low - UNEPHEMERAL_SPAN), low) for _ in range(50)) if low > 2048 else (0,)
    for port in draws:
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise RuntimeError(f"no free port on {host}")


# How far below the ephemeral range free_port draws from: far enough that two servers starting at once
# rarely draw the same port, clear of the well-known ones.
UNEPHEMERAL_SPAN = 20000
_draw = random.SystemRandom()


@functools.cache
def _ephemeral_low() -> int:
    """The lowest port the kernel hands to outgoing connections (Linux's default is 32768); read once
    (a store draws eight ports per start)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def listens(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=0.2).close()
        return True
    except OSError:
        return False


def await_listening(proc: subprocess.Popen, host: str, port: int, timeout: float, what: str) -> None:
    """Return once *proc* accepts connections on host:port; raise if it exits or takes longer than
    *timeout* (the caller stops it)."""
    deadline = time.monotonic() + timeout
    while not listens(host, port):
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not listen on {host}:{port} within {timeout} s")
        time.sleep(0.05)


def stop_child(proc: subprocess.Popen | None, grace: float) -> None:
    """SIGTERM, then SIGKILL if it is still there after *grace* seconds."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class ChildServer:
    """A server this process started (``self.proc``): paused and resumed to stage an outage, stopped by
    its PID with *stop_grace_s* between SIGTERM and SIGKILL."""

    proc: subprocess.Popen | None = None
    stop_grace_s = 5.0

    def start(self):
        raise NotImplementedError

    def pause(self) -> None:
        """An outage: connections stay open, but nothing is answered until :meth:`resume`.  Returns
        once every thread of the server has stopped: SIGSTOP is delivered to each thread on its own,
        and a loaded machine can let one thread answer a request after kill() has returned."""
        proc = self._started()
        proc.send_signal(signal.SIGSTOP)
        deadline = time.monotonic() + PAUSE_WAIT_S
        while not _all_threads_stopped(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.001)

    def resume(self) -> None:
        self._started().send_signal(signal.SIGCONT)

    def _started(self) -> subprocess.Popen:
        """The server's process: pausing or resuming one never started is the caller's bug."""
        if self.proc is None:
            raise RuntimeError(f"{type(self).__name__} was not started")
        return self.proc

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a paused server would not act on SIGTERM
        stop_child(self.proc, self.stop_grace_s)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


PAUSE_WAIT_S = 5.0


def _all_threads_stopped(pid: int) -> bool:
    """Whether each thread of *pid* is in the stopped state ("T" in /proc/PID/task/TID/stat)."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
        # The state follows the command name, which is in parentheses and may hold spaces.
        return all((t / "stat").read_text().rsplit(")", 1)[1].split()[0] in ("T", "t") for t in tasks)
    except (OSError, IndexError):
        return True  # gone, or not Linux: nothing more to wait for
