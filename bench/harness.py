"""What every benchmark shares: a broker, the tiny model, topics, configs, daemons as subprocesses.

Everything runs on loopback and is started here, by the benchmark; :meth:`Bench.close` stops
every process it started, by PID.  Daemons are started the way systemd starts them: with a
``NOTIFY_SOCKET`` (READY=1, STATUS=) and JSON logs in a file.
"""

from __future__ import annotations

import datetime
import itertools
import json
import os
import select
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from uvrd.broker.loopback import free_port
from uvrd.broker.tansu import TansuBroker
from uvrd.config import TopicsConfig
from devtools import tinymodel
from uvrd.broker.group_settings import GROUP_SETTINGS
from devtools.children import LoggedProcess
from devtools.notifylistener import NotifyListener, toml_value

# Short group timeouts: Tansu's joins are slow with kafka-python's defaults (as in the tests).
FAST_GROUP = GROUP_SETTINGS
ROOT = Path(__file__).resolve().parent.parent


def say(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", flush=True)


# -- statistics -------------------------------------------------------------
def median(xs):
    return statistics.median(xs) if xs else float("nan")


def pct(xs, q: float):
    """The q-quantile (0..1) by linear interpolation."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    pos = q * (len(s) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def iso_epoch(stamp: str) -> float:
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


# -- processes ----------------------------------------------------------------
class Proc(LoggedProcess):
    """A subprocess whose exit time is taken from a pidfd: exact, no polling interval."""

    def __init__(self, argv: list[str], log_path: Path, env: dict, notify: NotifyListener | None = None):
        self.notify = notify
        self.started = time.monotonic()
        super().__init__(argv, log_path, env, cwd=ROOT)
        self.pidfd = os.pidfd_open(self.proc.pid)
        self.exited_at: float | None = None
        self.ready_at: float | None = None
        self.command = argv[3] if len(argv) > 3 and argv[1:3] == ["-m", "uvrd"] else None

    def alive(self) -> bool:
        return self.exited_at is None and self.proc.poll() is None

    def wait_ready(self, timeout: float = 300, check=None) -> float:
        """Wait for READY=1 (or *check()* true); the monotonic time it came."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.log_path.name}: exited with {self.proc.returncode} before ready:\n"
                                   f"{self.log_text()[-2000:]}")
            t = self.notify.first(lambda m: m == "READY=1") if self.notify and check is None else None
            if t is None and check is not None and check():
                t = time.monotonic()
            if t is not None:
                self.ready_at = t
                return t
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.log_path.name}: not ready within {timeout} s")
            time.sleep(0.05)

    def signal(self, sig=signal.SIGTERM) -> float:
        t = time.monotonic()
        self.proc.send_signal(sig)
        return t

    def wait_exit(self, timeout: float) -> float | None:
        """The monotonic exit time, or None if still running after *timeout*."""
        if self.exited_at is None:
            ready, _, _ = select.select([self.pidfd], [], [], timeout)
            if not ready:
                return None
            self.exited_at = time.monotonic()
            self.proc.wait()
        return self.exited_at

    def kill(self) -> None:
        self.kill_all()
        self.exited_at = self.exited_at or time.monotonic()

    def close(self) -> None:
        self.kill()
        self.close_log()
        os.close(self.pidfd)
        if self.notify:
            self.notify.close()


# -- the bench ------------------------------------------------------------------
class Bench:
    def __init__(self, root: Path | None = None, broker=None):
        """*broker*: a started broker to run on (stopped by :meth:`close`); else an in-memory one."""
        self.own_root = root is None
        self.root = Path(root or tempfile.mkdtemp(prefix="uvrd-bench-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.procs: list[Proc] = []
        self.started: list[Proc] = []
        self.first_results: list[float] = []  # processors started with a task queued: exec to its result
        self._names = itertools.count()
        self.broker = broker or TansuBroker(log_path=self.root / "broker.log").start()
        self.bootstrap = self.broker.bootstrap
        self.model_dir = self.root / "models"
        tinymodel.install(self.model_dir)
        self.samples = self.root / "samples"
        self.producer = KafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=0)

    # -- inputs ---------------------------------------------------------------
    def sample(self, seconds: float) -> Path:
        path = self.samples / f"sample-{seconds:g}s.wav"
        if not path.exists():
            tinymodel.write_sample(path, seconds=seconds)
        return path

    def spool_copy(self, spool: Path, source: Path) -> Path:
        spool.mkdir(parents=True, exist_ok=True)
        target = spool / f"{uuid.uuid4()}{source.suffix}"
        shutil.copyfile(source, target)
        return target

    # -- topics and config ------------------------------------------------------------
    def topics(self, label: str, partitions: int = 1) -> TopicsConfig:
        prefix = f"b{next(self._names)}-{label}"
        topics = TopicsConfig(tasks=f"{prefix}.tasks", results=f"{prefix}.results", dead_letter=f"{prefix}.dlq",
                              status=f"{prefix}.status")
        self.broker.create_uvrd_topics(topics, task_partitions=partitions)
        return topics

    def workdir(self, label: str) -> Path:
        d = self.root / f"{label}-{next(self._names)}"
        d.mkdir(parents=True)
        return d

    def write_config(self, where: Path, topics: TopicsConfig, group: str, processor: dict | None = None,
                     api: dict | None = None, uploader: dict | None = None, model_dir: Path | None = None,
                     model: str = tinymodel.TINY_MODEL, storage: dict | None = None) -> Path:
        settings = {
            "group_id": group, "model": model, "model_dir": str(model_dir or self.model_dir),
            "spool_dir": str(where / "spool"), "output_dir": str(where / "output"),
            "output_format": "wav", "mdx_hop_length": tinymodel.HOP_LENGTH,
            "mdx_segment_size": tinymodel.SEGMENT_SIZE, "drain_timeout": 60, **(processor or {}),
        }
        lines = ["[kafka]", f'bootstrap_servers = "{self.bootstrap}"']
        lines += [f"{k} = {v}" for k, v in FAST_GROUP.items()]
        lines += ["[topics]", f"tasks = {toml_value(topics.tasks)}", f"results = {toml_value(topics.results)}",
                  f"dead_letter = {toml_value(topics.dead_letter)}", f"status = {toml_value(topics.status)}", "[processor]"]
        lines += [f"{k} = {toml_value(v)}" for k, v in settings.items()]
        uploader = {"group_id": f"{group}-uploader", "webhook_secret": "whsec", "timeout": 5, **(uploader or {})}
        lines += ["[uploader]"] + [f"{k} = {toml_value(v)}" for k, v in uploader.items()]
        port = free_port()
        api = {"listen": f"127.0.0.1:{port}", "public_url": f"http://127.0.0.1:{port}", "tokens": ["bench"],
               "link_secret": "links", "allow_private_urls": True, **(api or {})}
        lines += ["[api]"] + [f"{k} = {toml_value(v)}" for k, v in api.items()]
        if storage:
            lines += ["[storage]"] + [f"{k} = {toml_value(v)}" for k, v in storage.items()]
        path = where / "uvrd.toml"
        path.write_text("\n".join(lines) + "\n")
        return path

    # -- daemons ----------------------------------------------------------------------
    def _env(self, extra: dict | None = None) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("UVRD_", "NOTIFY_", "WATCHDOG_"))}
        env["PYTHONUNBUFFERED"] = "1"
        env["UVRD_LOG_FORMAT"] = "json"
        env.update(extra or {})
        return env

    def daemon(self, command: str, config: Path, env: dict | None = None, module: str = "uvrd") -> Proc:
        """``uvrd <command>`` with a notify socket of its own, in the config's directory; *module*: a
        bench-only stand-in for ``uvrd <command>`` (``python -m MODULE --config FILE``)."""
        where = config.parent / f"{command}-{next(self._names)}"
        where.mkdir()
        notify = NotifyListener(where / "notify.sock")
        env = self._env({"NOTIFY_SOCKET": notify.path,
                         "UVRD_PROCESSOR_TRANSACTIONAL_ID": f"bench-{where.name}-{uuid.uuid4().hex[:8]}",
                         "UVRD_UPLOADER_TRANSACTIONAL_ID": f"bench-{where.name}-{uuid.uuid4().hex[:8]}",
                         **(env or {})})
        argv = [sys.executable, "-m", "uvrd", command] if module == "uvrd" else [sys.executable, "-m", module]
        proc = Proc([*argv, "--config", str(config)], where / "daemon.log", env, notify)
        self.procs.append(proc)
        self.started.append(proc)
        return proc

    @property
    def processor_starts(self) -> list[float]:
        """Seconds from exec to READY=1 of every processor started so far."""
        return [p.ready_at - p.started for p in self.started if p.command == "processor" and p.ready_at]

    def script(self, argv: list[str], where: Path, name: str) -> Proc:
        proc = Proc([sys.executable, *argv], where / f"{name}.log", self._env())
        self.procs.append(proc)
        return proc

    def forget(self, proc: Proc) -> None:
        proc.close()
        if proc in self.procs:
            self.procs.remove(proc)

    # -- kafka ------------------------------------------------------------------------
    def send_task(self, topic: str, audio: Path, partition: int | None = None, **fields) -> str:
        task_uuid = str(uuid.uuid4())
        task = {"task_uuid": task_uuid, "audio_path": str(audio), "hook_url": None, **fields}
        self.producer.send(topic, key=task_uuid.encode(), value=json.dumps(task).encode(), partition=partition)
        return task_uuid

    def flush(self) -> None:
        self.producer.flush(10)

    def results_reader(self, topic: str) -> ResultsReader:
        return ResultsReader(self.bootstrap, topic)

    def close(self) -> None:
        for proc in list(self.procs):
            proc.close()
        self.procs.clear()
        self.producer.close(timeout=5)
        self.broker.stop()
        if self.own_root and not os.environ.get("UVRD_BENCH_KEEP"):  # set it to read the daemons' logs
            shutil.rmtree(self.root, ignore_errors=True)


class ResultsReader:
    """Reads a results topic (read_committed) from its current end, with the time each result was
    produced, on this process's monotonic clock.

    The producer stamps a record when it sends it (CreateTime), so neither this reader's polling nor
    a batching producer shifts the figure; an exactly-once result becomes visible when its
    transaction commits, about 10 ms later.  A lazy fetch keeps the reader off the CPU the
    measured work needs on a 2-core machine.
    """

    def __init__(self, bootstrap: str, topic: str):
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed",
                                      enable_auto_commit=False, fetch_max_wait_ms=500)
        parts = self.consumer.partitions_for_topic(topic) or {0}
        self.tps = [TopicPartition(topic, p) for p in sorted(parts)]
        self.consumer.assign(self.tps)
        self.consumer.seek_to_end(*self.tps)
        for tp in self.tps:
            self.consumer.position(tp)
        self.seen: list[tuple[float, dict]] = []

    def poll(self, timeout_ms: int = 200) -> None:
        for batch in self.consumer.poll(timeout_ms=timeout_ms).values():
            wall_minus_mono = time.time() - time.monotonic()
            self.seen.extend((r.timestamp / 1000 - wall_minus_mono, json.loads(r.value)) for r in batch)

    def wait(self, n: int, timeout: float, alive=None) -> list[tuple[float, dict]]:
        """Until *n* results arrived in all (counting earlier ones); the arrivals."""
        deadline = time.monotonic() + timeout
        while len(self.seen) < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(self.seen)} of {n} results within {timeout} s")
            if alive is not None and not alive():
                raise RuntimeError("the daemon exited while results were awaited")
            self.poll()
        return self.seen

    def take(self) -> list[tuple[float, dict]]:
        seen, self.seen = self.seen, []
        return seen

    def close(self) -> None:
        self.consumer.close()


class Finished:
    """Counts the tasks daemons finish from now on, from their logs.

    Waiting on this instead of on a results reader leaves the broker and the CPU to the work being
    measured: on 2 cores, a reader polling the results topic beside a processor slowed its
    separations by 2-3 %, a cost the in-process loop it is compared with never pays.  The results'
    produce times are read from the topic afterwards, so the waiting's granularity shifts no figure.
    """

    def __init__(self, procs: list[Proc]):
        self.procs = list(procs)
        self.base = self._total()

    def _total(self) -> int:
        return sum(e.get("event") in ("task succeeded", "task failed") for p in self.procs for e in p.log_events())

    def wait(self, n: int, timeout: float, every: float = 0.5) -> None:
        deadline = time.monotonic() + timeout
        while (done := self._total() - self.base) < n:
            if not all(p.alive() for p in self.procs):
                raise RuntimeError("a daemon exited while its tasks were awaited")
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {done} of {n} tasks finished within {timeout} s")
            time.sleep(every)


def take_turns(repeats: int, loop, uvrd, describe) -> None:
    """Run *loop* (the in-process side) and *uvrd* *repeats* times each, in the order A B B A ..., so
    that whatever else the machine does, and any drift over the run, weighs on both alike.
    ``describe(repeat, order)`` says what a turn runs."""
    for repeat in range(repeats):
        order = (loop, uvrd) if repeat % 2 == 0 else (uvrd, loop)
        say(describe(repeat, " then ".join("the loop" if side is loop else "uvrd" for side in order)))
        for side in order:
            side()


def start_many(bench: Bench, make, n: int, parallel: int, ready_timeout: float = 300) -> list:
    """Start *n* things with *make(i)* (returns a Proc, or a tuple whose first item is one), at most
    *parallel* loading at once; return them all once each is ready."""
    done, loading = [], []
    pending = list(range(n))
    while pending or loading:
        while pending and len(loading) < parallel:
            loading.append(make(pending.pop(0)))
        item = loading.pop(0)
        proc = item[0] if isinstance(item, tuple) else item
        proc.wait_ready(ready_timeout)
        done.append(item)
    return done


def max_or_nan(xs):
    return max(xs) if xs else float("nan")


def wait_event(proc: Proc, name: str, timeout: float, count: int = 1) -> list[dict]:
    """Until *proc* logged event *name* at least *count* times; those events."""
    deadline = time.monotonic() + timeout
    while True:
        found = proc.events(name)
        if len(found) >= count:
            return found
        if not proc.alive():
            raise RuntimeError(f"{proc.log_path}: exited while waiting for {name!r}:\n{proc.log_text()[-2000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{proc.log_path}: no {name!r} within {timeout} s")
        time.sleep(0.1)
