"""Local servers that uvrd starts as child processes: a free port for each, waiting until one
listens, and stopping one by its PID."""

from __future__ import annotations

import socket
import subprocess
import time


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


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
