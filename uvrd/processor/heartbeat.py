"""The processor's heartbeat on the workers topic (boards/workers.py): what it is and what it does.

Sent at most once a turn: when what the worker does changes (its state, its task, its models) and
otherwise every ``processor.heartbeat_interval``, through the bulletin (best effort, never
blocking the loop).  On a clean exit, a goodbye (the key's tombstone) takes the worker off the list.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable

from uvrd import __version__, messages
from uvrd.boards import workers
from uvrd.kafka.bulletin import Bulletin


class Heartbeat:
    def __init__(self, bulletin: Bulletin, topic: str, worker: str, interval: float,
                 clock: Callable[[], float] = time.monotonic):
        self.bulletin = bulletin
        self.topic = topic
        self.worker = worker
        self.interval = interval
        self._clock = clock
        self._sent_at = float("-inf")
        self._sent_shape: tuple | None = None
        self._identity = {"host": socket.gethostname(), "pid": os.getpid(), "version": __version__,
                          "started_at": messages.now_iso(), "interval_s": interval}

    def beat(self, doing: dict) -> bool:
        """Send *doing* (state, models, task, ...) if it changed or the interval passed; True if sent."""
        shape = (doing.get("state"), (doing.get("task") or {}).get("task_uuid"),
                 tuple((m.get("model"), m.get("warm")) for m in doing.get("models", ())))
        now = self._clock()
        if shape == self._sent_shape and now - self._sent_at < self.interval:
            return False
        self.bulletin.send(workers.heartbeat(self.topic, self.worker, **self._identity, **doing))
        self._sent_at, self._sent_shape = now, shape
        return True

    def goodbye(self) -> None:
        if self._sent_shape is not None:
            self.bulletin.send(workers.goodbye(self.topic, self.worker))


def doing(engine, run, host_trouble: str | None, stopping: bool) -> dict:
    """What the worker does now, for its heartbeat: *run* is the separation's Run or None."""
    if stopping:
        state = "stopping"
    elif not engine.ready:
        state = "warming" if engine.warming else "loading"
    elif host_trouble:
        state = "waiting"
    else:
        state = "busy" if run is not None else "idle"
    task = None
    if run is not None:
        task = {"task_uuid": run.task_uuid, "seconds": round(run.age(), 1)}
        if run.progress is not None:
            task.update(progress=run.progress.fraction, step=run.progress.step)
    return {"state": state, "device": engine.load_info.get("device"),
            "execution_provider": engine.load_info.get("execution_provider"), "models": list(engine.models.values()),
            "task": task, "trouble": host_trouble}
