"""The pipeline spread over hosts: network namespaces on one private switch, made by the test.

    infra   10.213.0.1   the broker (Tansu) and the object store (SeaweedFS S3)
    front   10.213.0.2   uvrd api and uvrd uploader
    gpu1    10.213.0.3   uvrd processor
    gpu2    10.213.0.4   uvrd processor
    client  10.213.0.5   the test itself: submits, receives the webhooks, reads the topics

Each host has its own spool and output directories (nothing is shared but the model file,
which every GPU host would have installed); the audio and stems move through the bucket.
No namespace has a route beyond 10.213.0.0/24, so all traffic stays on the switch or a
loopback.  A batch goes in, one worker's processor is SIGKILLed in the middle of a job and
restarted (as systemd's ``Restart=on-failure`` would), and from outside the test checks that
every task ends in exactly one result and one delivered webhook and that both workers did work.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from kafka import KafkaConsumer, TopicPartition
from netns import Network, Unavailable
from support import FAST_GROUP, Daemon, KafkaView, NotifySocket, WebhookReceiver, toml_value, wait_until

from uvrd.broker.object_store import ObjectStore
from uvrd.broker.tansu import TansuBroker
from uvrd.config import TopicsConfig
from devtools import tinymodel

pytestmark = pytest.mark.slow

TOKEN = "multihost-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BATCH = 8
# Tasks per task partition at least: each worker has a task to finish before the kill and more after.
PER_PARTITION = 3
AUDIO_SECONDS = 8
PARTITIONS = 2
WORKERS = ("gpu1", "gpu2")
PROCESSOR = {"job_timeout": 120, "job_retries": 2, "engine_stall_timeout": 10, "max_attempts": 4,
             "drain_timeout": 20}
UPLOADER = {"webhook_secret": "whsec", "max_attempts": 6, "backoff_initial": 0.2, "backoff_max": 2.0, "timeout": 10,
            "spool_retention": 3600}


class Hosts:
    """The daemons started on the hosts, each kept under its name across restarts (same
    transactional id, same log file); every one is stopped by its PID at the end."""

    def __init__(self, net: Network, root: Path):
        self.net = net
        self.root = root
        self.daemons: dict[str, Daemon] = {}
        self.runs: list[Daemon] = []
        self.specs: dict[str, tuple] = {}

    def start(self, name: str, host: str, command: str, config: Path, env: dict) -> Daemon:
        self.specs[name] = (host, command, config, env)
        workdir = self.root / f"{name}.run{sum(d.log_path.stem == name for d in self.runs)}"
        workdir.mkdir()
        with self.net.entered(host):
            daemon = Daemon(command, config, self.root / f"{name}.log", NotifySocket(workdir), env=env)
        self.daemons[name] = daemon
        self.runs.append(daemon)
        return daemon

    def restart(self, name: str) -> Daemon:
        return self.start(name, *self.specs[name])

    def kill(self, name: str) -> None:
        """SIGKILL the main process, as a crash would; its engine child goes with it (PDEATHSIG)."""
        daemon = self.daemons[name]
        children = daemon.children()
        daemon.signal(signal.SIGKILL)
        daemon.proc.wait(30)
        wait_until(lambda: all(not Path(f"/proc/{pid}").exists() or _zombie(pid) for pid in children), 30,
                   f"{name}'s children to exit")

    def events(self, name: str, event: str) -> list[dict]:
        return [e for e in self.daemons[name].log_events() if e.get("event") == event]

    def close(self) -> None:
        for daemon in self.runs:
            daemon.stop()
            daemon.notify.close()


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].startswith("Z")
    except OSError:
        return True


def write_config(path: Path, sections: dict) -> Path:
    lines = []
    for section, values in sections.items():
        lines += [f"[{section}]"] + [f"{k} = {toml_value(v)}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        ends = consumer.end_offsets([TopicPartition(topic, p) for p in range(partitions)])
    finally:
        consumer.close()
    return {tp.partition: offset for tp, offset in ends.items()}


@pytest.fixture
def network():
    try:
        net = Network()
    except Unavailable as e:
        pytest.skip(f"network namespaces cannot be made here (the multi-host test needs root or CAP_SYS_ADMIN "
                    f"and iproute2): {e}")
    try:
        yield net
    finally:
        net.close()


def test_a_batch_spreads_over_two_worker_hosts_and_a_killed_worker_loses_and_repeats_nothing(
        network, model_dir, tmp_path, record_property):
    addr = {name: network.add_host(name) for name in ("infra", "front", "gpu1", "gpu2", "client")}
    for name in addr:
        assert not [r for r in network.routes(name) if r.startswith("default")], "no way off the switch"
    hosts = Hosts(network, tmp_path)
    cleanup = []
    try:
        # -- infra: the broker (advertising its host's address) and the object store ---------
        with network.entered("infra"):
            broker = TansuBroker(port=9092, host=addr["infra"], log_path=tmp_path / "broker.log").start()
            cleanup.append(broker.stop)
            store = ObjectStore(tmp_path / "infra" / "s3", log_path=tmp_path / "weed.log", host=addr["infra"])
            cleanup.append(store.stop)
            store.start()
        topics = TopicsConfig(tasks="mh.tasks", results="mh.results", dead_letter="mh.dlq", status="mh.status")
        group = "mh.processors"
        # The admin step, from the front host: the task topics get a partition per worker.
        with network.entered("front"):
            broker.create_uvrd_topics(topics, task_partitions=PARTITIONS)

        # -- one config per host, each with its own local directories --------------------------
        def config(host: str) -> Path:
            local = tmp_path / host
            (local / "spool").mkdir(parents=True, exist_ok=True)
            (local / "output").mkdir(parents=True, exist_ok=True)
            return write_config(tmp_path / f"{host}.toml", {
                "kafka": {"bootstrap_servers": broker.bootstrap, **FAST_GROUP},
                "topics": {"tasks": topics.tasks, "results": topics.results, "dead_letter": topics.dead_letter,
                           "status": topics.status},
                "processor": {"group_id": group, "model": tinymodel.TINY_MODEL, "model_dir": str(model_dir),
                              "spool_dir": str(local / "spool"), "output_dir": str(local / "output"),
                              "output_format": "wav", "mdx_hop_length": tinymodel.HOP_LENGTH,
                              "mdx_segment_size": tinymodel.SEGMENT_SIZE, **PROCESSOR},
                "uploader": {"group_id": f"{group}-uploader", **UPLOADER},
                "api": {"listen": f"{addr['front']}:8080", "public_url": f"http://{addr['front']}:8080",
                        "workers": 1, "tokens": [TOKEN], "link_secret": "links", "allow_private_urls": True,
                        "result_retention": 3600},
                "storage": store.storage_settings(prefix="multihost"),
            })

        front = config("front")
        api_url = f"http://{addr['front']}:8080"
        hosts.start("api", "front", "api", front, {})
        hosts.start("uploader", "front", "uploader", front, {"UVRD_UPLOADER_TRANSACTIONAL_ID": "mh-uploader"})
        for worker in WORKERS:
            hosts.start(worker, worker, "processor", config(worker),
                        {"UVRD_PROCESSOR_TRANSACTIONAL_ID": f"mh-processor-{worker}"})

        # -- the client host: the test from here on --------------------------------------------
        with network.entered("client"):
            receiver = WebhookReceiver(host=addr["client"])
            cleanup.append(receiver.close)
            kafka = KafkaView(broker.bootstrap)
            cleanup.append(kafka.close)
            for name in ("uploader", *WORKERS):
                hosts.daemons[name].wait_ready(180)

            def api_up():
                assert hosts.daemons["api"].proc.poll() is None, hosts.daemons["api"].log_text()[-3000:]
                try:
                    return requests.get(api_url + "/readyz", timeout=5).status_code == 200
                except requests.ConnectionError:
                    return False
            wait_until(api_up, 120, "the api on the front host", interval=0.2)

            # Both workers in the group, each holding one partition of the task topic.
            def assigned(worker: str) -> set[str]:
                events = hosts.events(worker, "partitions assigned")
                parts = events[-1]["partitions"] if events else []
                return {p for p in parts if p.rsplit("/", 1)[0] == topics.tasks}
            wait_until(lambda: all(len(assigned(w)) == 1 for w in WORKERS) and assigned("gpu1") != assigned("gpu2"),
                       120, "each worker to hold one task partition", interval=0.2)

            audio = tinymodel.write_sample(tmp_path / "client" / "take.wav", seconds=AUDIO_SECONDS)

            def submit() -> str:
                with open(audio, "rb") as f:
                    r = requests.post(api_url + "/v1/tasks", headers=AUTH, files={"audio": ("take.wav", f)},
                                      data={"hook_url": receiver.url}, timeout=120)
                assert r.status_code == 202, r.text
                return r.json()["task_uuid"]

            def partition_counts() -> dict[int, int]:
                records = kafka.read_all(topics.tasks, PARTITIONS)
                return {p: sum(r.partition == p for r in records) for p in range(PARTITIONS)}

            started = time.monotonic()
            accepted = [submit() for _ in range(BATCH)]
            # The api keys tasks by their uuid: top the batch up until each partition has its share.
            while min(partition_counts().values()) < PER_PARTITION:
                assert len(accepted) < 4 * BATCH, f"the keys never reached every partition: {partition_counts()}"
                accepted.append(submit())

            # -- the crash: a worker that has finished a task is killed in the middle of its next --
            def succeeded(worker: str) -> list[str]:
                return [e["task_uuid"] for e in hosts.events(worker, "task succeeded")]

            def in_flight(worker: str) -> str | None:
                done = set(succeeded(worker))
                running = [e["task_uuid"] for e in hosts.events(worker, "task started") if e["task_uuid"] not in done]
                return running[-1] if running else None

            def victim():
                for worker, other in (WORKERS, WORKERS[::-1]):
                    if succeeded(worker) and in_flight(worker) and hosts.events(other, "task started"):
                        return worker, in_flight(worker)
                return None
            killed, interrupted = wait_until(victim, 150, "a worker in the middle of its second task", interval=0.02)
            hosts.kill(killed)
            assert interrupted not in succeeded(killed), "killed before it could finish the task"
            hosts.restart(killed).wait_ready(180)

            # -- every task through, nothing left to redo or redeliver --------------------------
            def delivered() -> set[str]:
                return {json.loads(r["body"])["task_uuid"] for r in receiver.successes()}
            wait_until(lambda: delivered() >= set(accepted), 180, "every task's webhook", interval=0.2)
            elapsed = time.monotonic() - started

            tasks = kafka.read_all(topics.tasks, PARTITIONS)

            def all_consumed(group_id: str, topic: str, records: list, partitions: int) -> bool:
                committed = kafka.committed(group_id, topic, partitions)
                return all(committed.get(p, 0) > max(r.offset for r in records if r.partition == p)
                           for p in {r.partition for r in records})
            wait_until(lambda: all_consumed(group, topics.tasks, tasks, PARTITIONS), 60,
                       "the processors' offsets past every task", interval=0.2)
            wait_until(lambda: all_consumed(f"{group}-uploader", topics.results, kafka.read_all(topics.results), 1),
                       60, "the uploader's offset past every result", interval=0.2)

            # -- checks, from outside -----------------------------------------------------------
            results = [json.loads(r.value) for r in kafka.read_all(topics.results)]
            assert sorted(r["task_uuid"] for r in results) == sorted(accepted), "exactly one result per task"
            assert all(r["success"] and r["storage"] == "s3" for r in results), results
            hooks = [json.loads(r["body"]) for r in receiver.successes()]
            assert sorted(h["task_uuid"] for h in hooks) == sorted(accepted), "exactly one delivery per task"
            assert all(h["status"] == "success" for h in hooks)
            assert kafka.read_all(topics.dead_letter) == []

            # A worker logs "task succeeded" once the commit is done and the input removed.
            wait_until(lambda: {u for w in WORKERS for u in succeeded(w)} >= set(accepted), 60,
                       "every success in a worker's log", interval=0.2)
            by_worker = {w: succeeded(w) for w in WORKERS}
            everywhere = [u for done in by_worker.values() for u in done]
            assert sorted(everywhere) == sorted(accepted), "each task succeeded on one worker, once"
            assert all(by_worker.values()), f"both workers did work: {by_worker}"
            assert everywhere.count(interrupted) == 1
            finisher = next(w for w, done in by_worker.items() if interrupted in done)

            # The api on the front host tells the interrupted task's end; its stems are in the bucket,
            # reachable from the client host.
            def state() -> str:
                return requests.get(f"{api_url}/v1/tasks/{interrupted}", headers=AUTH, timeout=10).json()["state"]
            wait_until(lambda: state() == "delivered", 60, "the api to report the interrupted task delivered",
                       interval=0.2)
            [hook] = [h for h in hooks if h["task_uuid"] == interrupted]
            stem = requests.get(hook["stems"]["vocals"], timeout=30)
            assert stem.status_code == 200 and stem.content[:4] == b"RIFF"
            assert hook["stems"]["vocals"].startswith(f"http://{addr['infra']}:")
            assert store.keys("multihost/inputs/") == [], "every input removed once its task was final"

            # `uvrd status` from the client host, through the front host's api: both worker hosts idle,
            # nothing in flight or waiting, no dead letter.
            def workers() -> list[dict]:
                return requests.get(f"{api_url}/v1/workers", headers=AUTH, timeout=10).json()["workers"]
            wait_until(lambda: sorted((w["worker"], w["alive"], w["state"]) for w in workers())
                       == [(f"mh-processor-{w}", True, "idle") for w in WORKERS], 60, "both workers idle",
                       interval=0.2)
            shown = subprocess.run([sys.executable, "-m", "uvrd", "status", "--api", api_url, "--token", TOKEN],
                                   capture_output=True, text=True, timeout=60)
            assert shown.returncode == 0, shown.stdout + shown.stderr
            out = shown.stdout
            assert "workers: 2 alive\n" in out and all(f"mh-processor-{w}" in out for w in WORKERS), out
            assert f"priority 3  {topics.tasks}" in out and "tasks in flight: 0" in out and "dead letters: 0" in out
            assert all(line.endswith(" 0 waiting") or "0 waiting for their webhook" in line
                       for line in out.splitlines() if "waiting" in line), out
            print("\n" + out)

            split = " ".join(f"{w}={len(by_worker[w])}" for w in WORKERS)
            line = (f"multihost: tasks={len(accepted)} {split} killed={killed} mid-job (its task finished once, "
                    f"on {finisher}) lost=0 duplicated=0 time={elapsed:.1f}s")
            print("\n" + line)
            record_property("summary", line)  # conftest prints it at the end of the run, xdist or not
    finally:
        hosts.close()
        for stop in reversed(cleanup):
            stop()
