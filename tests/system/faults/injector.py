"""Faults at random but reproducible moments: one seeded generator picks what and when.

The pipeline's timing is real, so a seed reproduces the sequence of faults and
their spacing, not every interleaving.  Each fault heals itself before the
next one starts (a killed daemon is restarted, a paused broker resumed), so
the run tests recovery from each fault rather than a pile-up of all of them.
"""

from __future__ import annotations

import collections
import os
import random
import signal
from pathlib import Path

from background import Background
from pipeline import Pipeline
from support import fill
from supervisor import Supervisor


class FaultInjector(Background):
    name = "faults"

    def __init__(self, pipeline: Pipeline, supervisor: Supervisor, seed: int, note):
        super().__init__()
        self.p = pipeline
        self.supervisor = supervisor
        self.rng = random.Random(seed)
        self.counts: collections.Counter[str] = collections.Counter()
        self.unexpected_exits: list[str] = []
        self.note = note
        self.faults = [self.kill_daemon, self.term_daemon, self.pause_broker, self.receiver_trouble,
                       self.engine_hang, self.engine_death, self.disk_full, self.corrupt_input]

    def loop(self) -> None:
        while not self.stopping.wait(self.rng.uniform(1.0, 3.0)):
            fault = self.rng.choice(self.faults)
            self.note(f"fault {fault.__name__}")
            fault()

    def _hold(self, low: float, high: float) -> None:
        self.stopping.wait(self.rng.uniform(low, high))

    # -- the faults -------------------------------------------------------------------
    def kill_daemon(self) -> None:
        name = self.rng.choice(list(self.p.components))
        with self.supervisor.lock:
            if not self.p.components[name].running():
                return  # exited on its own: the supervisor's to report and restart
            self.p.kill(name)
            self.counts["kills"] += 1
            self._hold(0.2, 2.0)
            self.p.start(name, wait=False)

    def term_daemon(self) -> None:
        name = self.rng.choice(list(self.p.components))
        with self.supervisor.lock:
            code = self.p.stop(name)
            if code != 0:
                self.unexpected_exits.append(f"{name} exited with {code} after SIGTERM")
            self.counts["terms"] += 1
            self._hold(0.2, 2.0)
            self.p.start(name, wait=False)

    def pause_broker(self) -> None:
        self.p.broker.pause()
        try:
            self._hold(1.0, 5.0)
        finally:
            self.p.broker.resume()
        self.counts["broker_pauses"] += 1

    def receiver_trouble(self) -> None:
        r = self.p.receiver
        kind = self.rng.choice(["slow", "down", "500", "429"])
        if kind == "down":
            r.go_down()
            self._hold(1.0, 8.0)
            r.come_back()
        elif kind == "slow":
            r.delay = self.rng.uniform(1.0, 4.0)
            self._hold(2.0, 8.0)
            r.delay = 0.0
        else:
            r.script = [int(kind)] * self.rng.randint(1, 8)
        self.counts["webhook_faults"] += 1

    def _engine(self) -> int | None:
        return self.p.engine_pid(self.rng.choice(self.p.processors()))

    def engine_hang(self) -> None:
        # A stopped engine stops its heartbeat: the processor must notice, kill and replace it.  Only
        # one that has asked to die with its processor: a child stopped before that (just spawned,
        # still starting Python) would outlive the processor's SIGKILL, as nothing could end it.
        pid = self._engine()
        if pid is not None and dies_with_parent(pid):
            os.kill(pid, signal.SIGSTOP)
            self.counts["engine_faults"] += 1

    def engine_death(self) -> None:
        pid = self._engine()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            self.counts["engine_faults"] += 1

    def disk_full(self) -> None:
        if not self.p.disk_is_tmpfs:
            return
        ballast = fill(self.p.disk)
        self._hold(1.0, 5.0)
        ballast.unlink()
        self.counts["disk_full"] += 1

    def corrupt_input(self) -> None:
        """Garble one waiting input: its task must end in one clear failure, the worker carry on."""
        inputs = sorted(f for f in self.p.spool.glob("*") if f.is_file() and not f.name.startswith("."))
        if not inputs:
            return
        victim = self.rng.choice(inputs)
        try:
            victim.write_bytes(b"RIFF\x00\x00garbage" * 8)
        except OSError:
            return
        self.counts["corrupted_inputs"] += 1


def dies_with_parent(pid: int) -> bool:
    """Whether the engine child *pid* is past the start of its set-up, which asks for its death
    signal (engine_child.set_up) just before it ignores SIGTERM: SIGTERM is in its ignored mask."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    ignored = next((line.split()[1] for line in status.splitlines() if line.startswith("SigIgn:")), "0")
    return bool(int(ignored, 16) & (1 << (signal.SIGTERM - 1)))
