"""Child processes that tests and benchmarks start, log to a file, read back and clean up.

Only ever by PID: what is stopped here is what was started here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path


class LoggedProcess:
    """A subprocess whose stdout and stderr go to *log_path*, read back as text or JSON log events."""

    def __init__(self, argv: list[str], log_path: Path, env: dict, cwd: Path | None = None):
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self._events: list[dict] = []  # the log's JSON lines read so far, and how far that is
        self._read_to = 0
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=env, cwd=cwd)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def children(self) -> list[int]:
        """Direct children (a processor's engine), from /proc; none once the process is gone."""
        return children_of(self.pid)

    def kill_all(self) -> None:
        """Clean-up: SIGKILL this process and its direct children, by PID, if it still runs."""
        if self.proc.poll() is not None:
            return
        for child in self.children():
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.kill()
        self.proc.wait(10)

    def close_log(self) -> None:
        self._log.close()

    def log_text(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def log_events(self) -> list[dict]:
        """Every JSON line of the log, oldest first; other lines (tracebacks, third-party prints) skipped.

        Only what was appended since the last call is read and parsed: callers poll this while the
        process works, and a long run's log would otherwise be parsed whole, again and again, on the
        CPU the process needs.  A line still being written waits for its newline.
        """
        with open(self.log_path, "rb") as f:
            f.seek(self._read_to)
            chunk = f.read()
        whole = chunk[:chunk.rfind(b"\n") + 1]
        self._read_to += len(whole)
        for line in whole.decode(errors="replace").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                self._events.append(event)
        return list(self._events)

    def events(self, name: str) -> list[dict]:
        """The log lines whose event is *name*, oldest first."""
        return [e for e in self.log_events() if e.get("event") == name]


def _memory_mb(pid: int, field: str, source: str = "status") -> float | None:
    """A line of /proc/PID/status (``VmRSS``, ``VmHWM``) or of another such file in kB, in MiB; None
    once the process is gone."""
    try:
        with open(f"/proc/{pid}/{source}") as f:
            for line in f:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        return None
    return None


def rss_mb(pid: int) -> float | None:
    """The process's resident memory now, in MiB; None once it is gone."""
    return _memory_mb(pid, "VmRSS")


def address_space_mb(pid: int) -> float | None:
    """The process's virtual memory (VmSize: what RLIMIT_AS bounds), in MiB; None if it is gone."""
    return _memory_mb(pid, "VmSize")


def peak_rss_mb(pid: int) -> float | None:
    """The process's peak resident memory (VmHWM: since it started, or since :func:`reset_peak_rss`),
    in MiB; None once it is gone."""
    return _memory_mb(pid, "VmHWM")


def pss_mb(pid: int) -> float | None:
    """The process's proportional share of memory now (each page it shares with n processes counts 1/n),
    in MiB: summed over processes, the memory they take together.  None once it is gone."""
    return _memory_mb(pid, "Pss", "smaps_rollup")


def cpu_s(pid: int) -> float | None:
    """The CPU time (user and system) the process has used so far, its children that it waited for
    included (/proc/PID/stat), in seconds; None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # After the command name: state is field 3, utime 14, stime 15, cutime 16, cstime 17.
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def reset_peak_rss(pid: int) -> None:
    """Linux: the process's VmHWM starts again from its resident memory now."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def children_of(pid: int) -> list[int]:
    """*pid*'s direct children, from /proc; none once it is gone."""
    pids = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            pids += [int(p) for p in (task / "children").read_text().split()]
    except OSError:
        pass
    return pids


def descendants(pid: int) -> list[int]:
    """Every process under *pid* (its children, theirs, ...), from /proc."""
    found, todo = [], [pid]
    while todo:
        kids = children_of(todo.pop())
        found += kids
        todo += kids
    return found
