"""A durable Kafka-compatible broker for one host: Tansu keeping its data in a SeaweedFS object
store, both children of this process, everything under one data directory.

Tansu's ``s3://`` storage engine writes each produced batch, each transaction's markers and each
group's committed offsets to the bucket before it answers, so a record the api was told is
written survives a crash or SIGKILL of the broker, of this process and of the object store.  The
object store's keys are made afresh for every start and never leave the data directory (mode
0600): the store listens on loopback only and nothing but this broker uses it.

Used by ``uvrd broker`` (the ``uvrd-broker`` unit) and by ``uvrd dev`` unless ``--ephemeral``.
"""

from __future__ import annotations

import fcntl
import socket
import struct
import time
from pathlib import Path
from typing import TextIO

from uvrd.broker.loopback import listens
from uvrd.broker.object_store import ObjectStore
from uvrd.broker.tansu import TansuBroker
from uvrd.runtime.deadline import Deadline

BUCKET = "tansu"


class BrokerInUse(RuntimeError):
    """Another broker runs on the same data directory: two would overwrite each other's data."""


class LocalBroker:
    def __init__(self, data_dir: Path, host: str = "127.0.0.1", port: int = 9092, log_dir: Path | None = None,
                 die_with_parent: bool = False):
        """*log_dir* None: the children log to this process's stdout (a daemon's journal)."""
        self.data_dir = Path(data_dir)
        self.store = ObjectStore(self.data_dir / "objects", bucket=BUCKET, host="127.0.0.1",
                                 log_path=log_dir / "objects.log" if log_dir else None,
                                 die_with_parent=die_with_parent, inherit_output=log_dir is None)
        self._lock: TextIO | None = None
        self.broker = TansuBroker(port=port, host=host, log_path=log_dir / "broker.log" if log_dir else None,
                                  die_with_parent=die_with_parent, storage=f"s3://{BUCKET}/",
                                  inherit_output=log_dir is None)

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap

    def start(self, deadline: Deadline | None = None) -> LocalBroker:
        deadline = deadline or Deadline.after(90.0)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        self._take_lock()
        try:
            self.store.start(max(1.0, deadline.remaining()))
        except BaseException:
            self._release_lock()
            raise
        self.broker.env = {"AWS_ENDPOINT": self.store.endpoint_url, "AWS_ACCESS_KEY_ID": self.store.access_key,
                           "AWS_SECRET_ACCESS_KEY": self.store.secret_key, "AWS_ALLOW_HTTP": "true",
                           "AWS_DEFAULT_REGION": "us-east-1"}
        try:
            self.broker.start(max(1.0, deadline.remaining()))
            while not answers_kafka(self.broker.host, self.broker.port, deadline.cap(2.0)):
                if deadline.expired():
                    raise RuntimeError(f"the broker on {self.bootstrap} listens but does not answer")
                time.sleep(0.1)
        except BaseException:
            self.stop()
            raise
        return self

    def dead_child(self) -> str | None:
        """The name of a child that exited, if one did."""
        for name, proc in (("broker", self.broker.proc), ("object store", self.store.proc)):
            if proc is not None and proc.poll() is not None:
                return f"{name} (status {proc.returncode})"
        return None

    def healthy(self, timeout: float = 2.0) -> bool:
        """Both children run, the broker answers a Kafka request and the store its port."""
        return (self.dead_child() is None and answers_kafka(self.broker.host, self.broker.port, timeout)
                and listens(self.store.host, self.store.ports["s3.port"]))

    def create_uvrd_topics(self, topics, task_partitions: int = 1) -> list[str]:
        return self.broker.create_uvrd_topics(topics, task_partitions)

    def stop(self) -> None:
        # The broker first: it writes to the store until it exits.
        self.broker.stop()
        self.store.stop()
        self._release_lock()

    def _take_lock(self) -> None:
        # Held while this process lives; the kernel drops it when the process dies, SIGKILL included.
        lock = self._lock = open(self.data_dir / "lock", "a")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            self._lock = None
            raise BrokerInUse(f"another broker uses {self.data_dir}") from None

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


API_VERSIONS = 18


def answers_kafka(host: str, port: int, timeout: float = 2.0) -> bool:
    """Whether a Kafka ApiVersions request (v0) gets a well-formed answer within *timeout*: the
    cheapest request every broker serves, with no client library and no state."""
    correlation = 0x75767264
    client_id = b"uvrd-probe"
    body = struct.pack(">hhih", API_VERSIONS, 0, correlation, len(client_id)) + client_id
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(struct.pack(">i", len(body)) + body)
            head = _read_exactly(sock, 10)
    except OSError:
        return False
    if head is None:
        return False
    size, got_correlation, error = struct.unpack(">iih", head)
    return got_correlation == correlation and error == 0 and size >= 6


def _read_exactly(sock: socket.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data
