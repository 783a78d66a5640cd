"""The whole pipeline as separate processes the fault suite can kill and restart.

api (gunicorn), processors, uploader and a webhook receiver, on the suite's
own broker, with the timeouts shortened so that a fault heals in seconds
rather than minutes.  Each component keeps its name across restarts, so a
restarted processor keeps its transactional id and fences its previous run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

import scrape
from support import FAST_GROUP, Daemon, NotifySocket, WebhookReceiver, small_filesystem, toml_value, wait_until
from uvrd.broker.loopback import free_port
from uvrd.config import TopicsConfig
from devtools import tinymodel

TOKEN = "fault-token"
# WatchdogSec for the processors and the uploader (gunicorn does its own for the api): shorter than
# the units' 120 s so a hung engine heals within a run, long enough for a model load on a busy host.
WATCHDOG_S = 30.0

# Short enough to heal within a run, long enough not to trip on a loaded 2-core machine.
PROCESSOR = {"job_timeout": 60, "job_retries": 2, "engine_stall_timeout": 10, "max_attempts": 4,
             "drain_timeout": 20}
UPLOADER = {"max_attempts": 6, "backoff_initial": 0.2, "backoff_max": 2.0, "timeout": 5, "drain_timeout": 10,
            "spool_retention": 3600, "retention_interval": 2}


@dataclass
class Component:
    name: str
    command: str
    env: dict
    daemon: Daemon | None = None
    starts: int = 0
    started_at: float = 0.0
    # Every process this component ever ran (main and children), for the no-leftovers check.
    pids: set[int] = field(default_factory=set)

    def running(self) -> bool:
        return self.daemon is not None and self.daemon.proc.poll() is None

    def note_children(self) -> None:
        if self.running():
            try:
                self.pids.update(self.daemon.children())
            except (FileNotFoundError, ProcessLookupError):
                pass


class Pipeline:
    def __init__(self, root: Path, broker, model_dir: Path, processors: int = 2):
        self.root = root
        self.broker = broker
        self.model_dir = model_dir
        prefix = f"faults-{os.getpid()}-{int(time.time() * 1000) % 10**8}"
        self.topics = TopicsConfig(tasks=f"{prefix}.tasks", results=f"{prefix}.results",
                                   dead_letter=f"{prefix}.dlq", status=f"{prefix}.status")
        self.group = f"{prefix}.processors"
        self.partitions = max(2, processors)
        broker.create_uvrd_topics(self.topics, task_partitions=self.partitions)
        # Spool and output on a small filesystem of their own, so the suite can fill it.
        self.disk = root / "disk"
        self._resources = contextlib.ExitStack()
        self.disk_is_tmpfs = self._resources.enter_context(small_filesystem(self.disk, 256)) is not None
        self.spool = self.disk / "spool"
        self.output = self.disk / "output"
        self.spool.mkdir(parents=True, exist_ok=True)
        self.output.mkdir(parents=True, exist_ok=True)
        self.receiver = WebhookReceiver()
        # Background loops that act on the components (fault injection, supervision), stopped first.
        self.loops: list = []
        self.api_url = f"http://127.0.0.1:{free_port()}"
        self.config = self._write_config()
        # Each component's /metrics, the same port across its restarts, as a unit's would be.
        self.metrics = {**{f"processor{i}": scrape.listen() for i in range(processors)},
                        "uploader": scrape.listen(), "api": scrape.listen()}
        self.components = {
            **{f"processor{i}": Component(f"processor{i}", "processor",
                                          {"UVRD_PROCESSOR_TRANSACTIONAL_ID": f"{self.group}-p{i}",
                                           "UVRD_PROCESSOR_METRICS_LISTEN": self.metrics[f"processor{i}"]})
               for i in range(processors)},
            "uploader": Component("uploader", "uploader",
                                  {"UVRD_UPLOADER_TRANSACTIONAL_ID": f"{self.group}-uploader",
                                   "UVRD_UPLOADER_METRICS_LISTEN": self.metrics["uploader"]}),
            "api": Component("api", "api", {"UVRD_API_METRICS_LISTEN": self.metrics["api"]}),
        }

    def _write_config(self) -> Path:
        t = self.topics
        sections = {
            "kafka": {"bootstrap_servers": self.broker.bootstrap, **FAST_GROUP},
            "topics": {"tasks": t.tasks, "results": t.results, "dead_letter": t.dead_letter, "status": t.status},
            "processor": {"group_id": self.group, "model": tinymodel.TINY_MODEL, "model_dir": str(self.model_dir),
                          "spool_dir": str(self.spool), "output_dir": str(self.output), "output_format": "wav",
                          "mdx_hop_length": tinymodel.HOP_LENGTH, "mdx_segment_size": tinymodel.SEGMENT_SIZE,
                          **PROCESSOR},
            "uploader": {"group_id": f"{self.group}-uploader", "webhook_secret": "whsec", **UPLOADER},
            "api": {"listen": self.api_url.removeprefix("http://"), "public_url": self.api_url, "workers": 2,
                    "tokens": [TOKEN], "link_secret": "links", "allow_private_urls": True, "drain_timeout": 10,
                    "result_retention": 20},
        }
        lines = []
        for section, values in sections.items():
            lines += [f"[{section}]"] + [f"{k} = {toml_value(v)}" for k, v in values.items()]
        path = self.root / "uvrd.toml"
        path.write_text("\n".join(lines) + "\n")
        return path

    # -- components ------------------------------------------------------------------
    def start(self, name: str, wait: bool = True) -> None:
        c = self.components[name]
        assert not c.running(), f"{name} is already running"
        if c.daemon is not None:
            c.daemon.stop()
            c.daemon.notify.close()
        c.starts += 1
        workdir = self.root / f"{name}.{c.starts}"
        workdir.mkdir()
        c.daemon = Daemon(c.command, self.config, self.root / f"{name}.log", NotifySocket(workdir), env=c.env,
                          watchdog_usec=None if name == "api" else int(WATCHDOG_S * 1e6))
        c.pids.add(c.daemon.pid)
        c.started_at = time.monotonic()
        if wait:
            self.wait_ready(name)

    def wait_ready(self, name: str) -> None:
        c = self.components[name]
        c.daemon.wait_ready(180)
        c.note_children()

    def start_all(self) -> None:
        for name in self.components:
            self.start(name, wait=False)
        for name in self.components:
            self.wait_ready(name)

    def signal(self, name: str, sig: int) -> None:
        c = self.components[name]
        c.note_children()
        c.daemon.signal(sig)

    def kill(self, name: str) -> None:
        """SIGKILL the main process, as the OOM killer or a power cut would.

        Its children go with it by their own means (PDEATHSIG, gunicorn's
        parent check); waiting for them keeps the restart off their ports.
        """
        c = self.components[name]
        c.note_children()
        children = set(c.daemon.children())
        c.daemon.signal(signal.SIGKILL)
        c.daemon.proc.wait(30)
        wait_until(lambda: all(gone(pid) for pid in children), 30, f"{name}'s children to exit")

    def stop(self, name: str, timeout: float = 120) -> int:
        c = self.components[name]
        if not c.running():
            return c.daemon.proc.returncode if c.daemon else 0
        c.note_children()
        c.daemon.signal(signal.SIGTERM)
        return c.daemon.wait_exit(timeout)

    def engine_pid(self, name: str) -> int | None:
        """The processor's separation child (the other child is multiprocessing's resource tracker)."""
        c = self.components[name]
        if not c.running():
            return None
        for pid in c.daemon.children():
            try:
                if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    c.pids.add(pid)
                    return pid
            except OSError:
                pass
        return None

    def processors(self) -> list[str]:
        return [n for n in self.components if n.startswith("processor")]

    def all_pids(self) -> set[int]:
        return set().union(*(c.pids for c in self.components.values()))

    def close(self) -> None:
        for c in self.components.values():
            if c.daemon is not None:
                c.daemon.stop()
                if c.daemon.notify:
                    c.daemon.notify.close()
        self.receiver.close()
        self._resources.close()

    # -- a client --------------------------------------------------------------------
    def submit(self, audio: bytes) -> tuple[str | None, str]:
        """POST one task; (task_uuid, "accepted") on 202, else (None, why it was not accepted)."""
        try:
            r = requests.post(f"{self.api_url}/v1/tasks", headers={"Authorization": f"Bearer {TOKEN}"},
                              files={"audio": ("take.wav", audio)}, data={"hook_url": self.receiver.url},
                              timeout=30)
        except requests.ConnectionError:
            return None, "connection"
        except requests.Timeout:
            return None, "timeout"
        if r.status_code == 202:
            return r.json()["task_uuid"], "accepted"
        return None, f"http {r.status_code}"


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1].startswith("Z")
    except OSError:
        return True


def sample_audio(path: Path, seconds: float = 1.0) -> bytes:
    return tinymodel.write_sample(path, seconds=seconds).read_bytes()
