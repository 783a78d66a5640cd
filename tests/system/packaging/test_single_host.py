"""One machine and nothing else: `apt-get install uvrd`, a model, `systemctl enable --now uvrd.target`.

A fresh container with no Kafka anywhere: the package's own broker (uvrd-broker.service, Tansu on a
SeaweedFS store under /var/lib/uvrd/broker) carries the work.  Tasks go in through the api as a
client sends them; outcomes are read from outside: the webhook receiver, systemd's unit state and
the journal.  Every task the api answered 202 for must end in exactly one webhook, through a
restart of the target, a SIGKILL of the broker and a stop with tasks queued.

The shipped configuration listens on 127.0.0.1:9092 and :8080 of the host's network (the container
shares it), so this module's tests run on one test process, one after the other.
"""

from __future__ import annotations

import json
import time
import tomllib
from pathlib import Path

import pytest
import requests

from container import Container
from installed_layer import installed_box
from support import WebhookReceiver, wait_until
from devtools import tinymodel
from uvrd.uploader import webhook

# This module's tests take the shipped configuration's fixed ports: nothing else in the suite listens on
# 9092 or 8080.

API = "http://127.0.0.1:8080"
SECRETS = "/etc/uvrd/uvrd.toml.d/50-secrets.toml"
UNITS = ["uvrd-broker.service", "uvrd-api.service", "uvrd-processor.service", "uvrd-uploader.service"]


class SingleHost:
    def __init__(self, box: Container, booted: float):
        self.box = box
        self.booted = booted  # when its boot began, the package just installed
        self.receiver = WebhookReceiver()
        self._token = None

    def secrets(self) -> dict:
        return tomllib.loads(self.box.run("cat", SECRETS).stdout)

    @property
    def token(self) -> str:
        if self._token is None:
            self._token = self.secrets()["api"]["tokens"][0]
        return self._token

    def submit(self, audio: Path) -> requests.Response | None:
        """The api's answer, or None while it is down (a restart): nothing was accepted then."""
        try:
            return requests.post(f"{API}/v1/tasks", headers={"Authorization": f"Bearer {self.token}"},
                                 data={"hook_url": self.receiver.url},
                                 files={"audio": (audio.name, audio.read_bytes())}, timeout=30)
        except requests.ConnectionError:
            return None

    def accept(self, audio: Path, within: float = 300) -> str:
        """Submit until the api answers 202 (it may be starting); the task's uuid."""
        answers = []

        def accepted():
            r = self.submit(audio)
            answers.append(None if r is None else f"{r.status_code} {r.text[:200]}")
            return r.json()["task_uuid"] if r is not None and r.status_code == 202 else None
        try:
            return wait_until(accepted, within, f"a 202 for {audio.name}", interval=1)
        except AssertionError as e:
            raise AssertionError(f"{e}; the api's last answers: {answers[-3:]}\n{self.units_state()}") from None

    def twice(self, delivered: list[str], accepted: list[str] | None = None) -> str:
        """For a task delivered more than once (or not accepted by this test): each delivery's attempt
        header, every journal line naming it (first, so that a cut output keeps them), and what the
        daemons said last."""
        again = {u for u in delivered if delivered.count(u) > 1}
        stray = set(delivered) - set(accepted) if accepted is not None else set()
        attempts = [(json.loads(r["body"])["task_uuid"], r["headers"].get("X-Uvrd-Delivery-Attempt"),
                     r["headers"].get("Idempotency-Key")) for r in self.receiver.requests
                    if json.loads(r["body"])["task_uuid"] in again | stray]
        quiet = ("kafka.net", "kafka.cluster", "kafka.coordinator", "kafka.consumer.fetcher", "kafka.producer")
        uvrd = [e for e in self.box.journal(None) if str(e.get("_SYSTEMD_UNIT", "")).startswith("uvrd")]
        # The broker's own lines say when it was killed and served again; the daemons' name the task.
        naming = [f"{e.get('_SYSTEMD_UNIT')}: {str(e.get('MESSAGE', ''))[:400]}" for e in uvrd
                  if any(u in str(e.get("MESSAGE", "")) for u in again | stray)
                  or (e.get("_SYSTEMD_UNIT") == "uvrd-broker.service" and "kafka" not in str(e.get("MESSAGE", "")))]
        said = {unit: [str(e.get("MESSAGE", ""))[:400] for e in uvrd if e.get("_SYSTEMD_UNIT") == unit
                       and not any(q in str(e.get("MESSAGE", "")) for q in quiet)]
                for unit in ("uvrd-uploader.service", "uvrd-processor.service")}
        return (f"deliveries of those delivered twice or not accepted here: {attempts}\n"
                + "the journal's lines naming them, and the broker's:\n" + "\n".join(naming[-150:]) + "\n"
                + "\n".join(f"{unit} said:\n" + "\n".join(lines[-60:]) for unit, lines in said.items()))

    def units_state(self) -> str:
        """What an operator would look at: each unit's state and the journal's last lines."""
        states = {u: self.box.show(u, "LoadState", "ActiveState", "SubState", "NRestarts", "StatusText") for u in UNITS}
        lines = [e.get("MESSAGE", "") for e in self.box.journal(None)[-40:]]
        uvrd = [e.get("MESSAGE", "") for e in self.box.journal(None, "_SYSTEMD_UNIT=uvrd-broker.service",
                                                                "+", "_SYSTEMD_UNIT=uvrd-api.service")[-20:]]
        facts = [self.box.run(*argv, check=False).stdout.strip()[-600:]
                 for argv in (["journalctl", "--list-boots", "--no-pager"], ["df", "-h", "/", "/run"],
                              ["dpkg-query", "-W", "-f=${Status} ${Version}", "uvrd"])]
        return (f"units: {states}\nboots, disk, package: {facts}\njournal:\n" + "\n".join(str(m)[:300] for m in lines)
                + "\nbroker and api:\n" + "\n".join(str(m)[:300] for m in uvrd))

    def state(self, task_uuid: str) -> str | None:
        try:
            r = requests.get(f"{API}/v1/tasks/{task_uuid}", headers={"Authorization": f"Bearer {self.token}"},
                             timeout=10)
        except requests.ConnectionError:
            return None
        return r.json().get("state") if r.status_code == 200 else None

    def delivered(self) -> list[str]:
        return [json.loads(r["body"])["task_uuid"] for r in self.receiver.requests]

    def wait_all_delivered_once(self, accepted: list[str], within: float = 600) -> None:
        try:
            wait_until(lambda: set(accepted) <= set(self.delivered()), within,
                       f"a webhook for each of {len(accepted)} accepted tasks")
        except AssertionError as e:
            states = {u: self.state(u) for u in accepted if u not in self.delivered()}
            raise AssertionError(f"{e}\nundelivered tasks' states: {states}\n{self.twice([])}") from None
        wait_until(lambda: all(self.state(u) == "delivered" for u in accepted), 120, "every task delivered")
        delivered = self.delivered()
        assert sorted(delivered) == sorted(accepted), \
            f"exactly one webhook per accepted task\n{self.twice(delivered, accepted)}"
        bodies = [json.loads(r["body"]) for r in self.receiver.requests]
        assert all(b["status"] == "success" for b in bodies), [(b["task_uuid"], b.get("error_message")) for b in bodies]


@pytest.fixture(scope="module")
def single_host(debian_root, uvrd_deb, uvrd_installed, tmp_path_factory):
    started = time.monotonic()
    with installed_box(debian_root, uvrd_deb, uvrd_installed, tmp_path_factory.mktemp("single-host")) as box:
        host = SingleHost(box, started)
        try:
            yield host
        finally:
            host.receiver.close()


def configure_a_model(box: Container) -> None:
    """The one thing an operator must do: a model, named in a drop-in.  The webhook receiver of this
    test listens on loopback, which uvrd refuses as an SSRF guard unless allowed."""
    tinymodel.install(box.host_path("/var/lib/uvrd/models"))
    box.run("chown", "-R", "uvrd:uvrd", "/var/lib/uvrd/models")
    box.write_text("/etc/uvrd/uvrd.toml.d/60-model.toml", f"""\
[processor]
model = "{tinymodel.TINY_MODEL}"
mdx_hop_length = {tinymodel.HOP_LENGTH}
mdx_segment_size = {tinymodel.SEGMENT_SIZE}
[api]
allow_private_urls = true
""")


def test_install_then_the_target_delivers_a_webhook_with_no_kafka_installed(single_host, tmp_path, record_property):
    box = single_host.box
    installed = box.run("dpkg-query", "-W", "-f=${Package}\\n").stdout.split()
    assert not [p for p in installed if "kafka" in p or "openjdk" in p or p.startswith("default-jre")], installed

    # The secrets were made on this host, readable by root and the uvrd group only, and are not a conffile.
    assert box.run("stat", "-c", "%a %U %G", SECRETS).stdout.split() == ["640", "root", "uvrd"]
    secrets = single_host.secrets()
    values = [secrets["api"]["tokens"][0], secrets["api"]["link_secret"], secrets["uploader"]["webhook_secret"]]
    assert all(len(v) == 64 and int(v, 16) for v in values) and len(set(values)) == 3, "three distinct 256-bit secrets"
    assert SECRETS not in box.run("dpkg-query", "-W", "-f=${Conffiles}", "uvrd").stdout
    # The broker is part of the target, and nothing runs before the operator starts it.
    assert box.systemctl("is-enabled", "uvrd-broker.service", check=False).stdout.strip() == "enabled"
    assert all(box.show(u, "ActiveState")["ActiveState"] == "inactive" for u in UNITS)

    configure_a_model(box)
    box.systemctl("enable", "--now", "uvrd.target", timeout=300)
    song = tinymodel.write_sample(tmp_path / "song.wav", seconds=3)
    task_uuid = single_host.accept(song, within=300)
    wait_until(lambda: single_host.receiver.successes(), 300, "the first webhook")
    first_result = time.monotonic() - single_host.booted
    [delivery] = single_host.receiver.requests
    assert json.loads(delivery["body"])["task_uuid"] == task_uuid
    assert webhook.verify(secrets["uploader"]["webhook_secret"], delivery["headers"][webhook.SIGNATURE_HEADER],
                          delivery["body"])

    broker = box.show("uvrd-broker.service", "ActiveState", "StatusText", "MainPID")
    assert broker["ActiveState"] == "active" and broker["StatusText"] == "serving Kafka on 127.0.0.1:9092", broker
    assert box.run("test", "-d", "/var/lib/uvrd/broker/objects", check=False).returncode == 0
    record_property("summary", f"single host: from the boot of a host with uvrd installed to the first webhook "
                               f"{first_result:.0f} s, "
                               f"no Kafka installed")


def test_a_restart_of_the_target_and_a_sigkill_of_the_broker_mid_batch_lose_no_task(single_host, long_audio,
                                                                                     tmp_path, record_property):
    box = single_host.box
    single_host.receiver.requests.clear()
    short = [tinymodel.write_sample(tmp_path / f"s{i}.wav", seconds=2) for i in range(6)]
    accepted = [single_host.accept(long_audio)] + [single_host.accept(p) for p in short[:3]]
    wait_until(lambda: single_host.state(accepted[0]) == "processing", 120, "the long task running")
    box.systemctl("restart", "uvrd.target", timeout=300)

    accepted += [single_host.accept(long_audio, within=300)] + [single_host.accept(p) for p in short[3:]]
    wait_until(lambda: single_host.state(accepted[4]) == "processing", 300, "the second long task running")
    broker_pid = box.show("uvrd-broker.service", "MainPID")["MainPID"]
    box.systemctl("kill", "--kill-whom=main", "--signal=SIGKILL", "uvrd-broker.service")
    wait_until(lambda: box.show("uvrd-broker.service", "MainPID")["MainPID"] not in ("0", broker_pid)
               and box.show("uvrd-broker.service", "ActiveState")["ActiveState"] == "active", 120,
               "systemd to restart the broker")

    single_host.wait_all_delivered_once(accepted)
    assert int(box.show("uvrd-broker.service", "NRestarts")["NRestarts"]) >= 1
    record_property("summary", f"single host: {len(accepted)} tasks through a target restart and a broker SIGKILL, "
                               f"{len(single_host.delivered())} webhooks, once each")


def test_a_stop_with_tasks_queued_then_a_start_completes_them(single_host, long_audio, tmp_path):
    box = single_host.box
    single_host.receiver.requests.clear()
    accepted = [single_host.accept(long_audio)]
    wait_until(lambda: single_host.state(accepted[0]) == "processing", 120, "the long task running")
    # Behind the long task: the one processor runs one task at a time.
    accepted += [single_host.accept(tinymodel.write_sample(tmp_path / f"q{i}.wav", seconds=2)) for i in range(3)]
    # The status answer trails the 202 by a moment (the api reads it back from the status topic).
    wait_until(lambda: [single_host.state(u) for u in accepted] == ["processing"] + ["queued"] * 3, 30,
               "the short tasks queued behind the long one")
    box.systemctl("stop", "uvrd.target", timeout=300)
    # The command returns with the target down; each daemon drains inside its own TimeoutStopSec.
    wait_until(lambda: all(box.show(u, "ActiveState")["ActiveState"] == "inactive" for u in UNITS), 300,
               "every unit stopped")
    done_before = set(single_host.delivered())

    box.systemctl("start", "uvrd.target", timeout=300)
    single_host.wait_all_delivered_once(accepted)
    assert not done_before & set(accepted[1:]), "the queued tasks waited for the start"
