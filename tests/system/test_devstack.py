"""``uvrd dev`` and ``uvrd submit``: the whole pipeline over real HTTP, a real broker and a webhook."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from support import WebhookReceiver, process_gone, wait_until
from uvrd.broker.loopback import free_port
from devtools import tinymodel
from devtools.children import descendants
from uvrd.uploader import webhook

TOKEN = "dev-token"


@pytest.fixture
def receiver():
    r = WebhookReceiver()
    yield r
    r.close()


@pytest.fixture
def dev_config(stack):
    port = free_port()
    api = f"http://127.0.0.1:{port}"

    def write(name="dev.toml", **processor):
        path = stack.write_config(name, api={"listen": f"127.0.0.1:{port}", "public_url": api,
                                             "tokens": [TOKEN], "workers": 1}, **processor)
        return path, api
    return write


def get_status(api, task_uuid):
    r = requests.get(f"{api}/v1/tasks/{task_uuid}", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    return r.json() if r.status_code == 200 else None


def submit_cli(api, *args, timeout=300):
    return subprocess.run([sys.executable, "-m", "uvrd", "submit", *args, "--api", api, "--token", TOKEN],
                          capture_output=True, text=True, timeout=timeout)


def test_submit_wait_follows_the_task_to_a_signed_webhook(stack, dev_config, receiver, tmp_path):
    config, api = dev_config()
    dev = stack.start("dev", config=config)
    dev.wait_ready(180)
    sample = tinymodel.write_sample(tmp_path / "song.wav", seconds=3)
    done = submit_cli(api, str(sample), "--hook-url", receiver.url, "--wait")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "accepted" in done.stdout and ("succeeded" in done.stdout or "delivered" in done.stdout)
    assert "vocals" in done.stdout and "instrumental" in done.stdout
    wait_until(lambda: receiver.successes(), 60, "the webhook")
    [delivery] = receiver.requests
    assert webhook.verify("whsec", delivery["headers"][webhook.SIGNATURE_HEADER], delivery["body"])
    payload = json.loads(delivery["body"])
    stem = requests.get(payload["stems"]["vocals"], timeout=10)
    assert stem.status_code == 200 and stem.content[:4] == b"RIFF", "the signed link downloads without a token"
    wait_until(lambda: (get_status(api, payload["task_uuid"]) or {}).get("state") == "delivered", 30, "delivered")

    # --output: the stems land on this machine, whole, named after the input.
    out = tmp_path / "stems"
    fetched = submit_cli(api, str(sample), "--output", str(out))
    assert fetched.returncode == 0, fetched.stdout + fetched.stderr
    task_uuid = fetched.stdout.split()[1]
    served = {p.read_bytes() for p in (stack.output / task_uuid).iterdir()}
    assert sorted(p.name for p in out.iterdir()) == ["song_instrumental.wav", "song_vocals.wav"]
    assert {p.read_bytes() for p in out.iterdir()} == served
    assert str(out / "song_vocals.wav") in fetched.stdout

    # Nowhere to put the stems: refused before a task exists.
    blocked = submit_cli(api, str(sample), "--output", str(tmp_path / "stems" / "song_vocals.wav"))
    assert blocked.returncode == 2 and "accepted" not in blocked.stdout, blocked.stdout + blocked.stderr
    dev.signal(signal.SIGTERM)
    assert dev.wait_exit(60) == 0


def test_submit_of_a_non_audio_file_fails_with_a_clear_message(stack, dev_config, tmp_path):
    config, api = dev_config()
    dev = stack.start("dev", config=config)
    dev.wait_ready(180)
    text = tmp_path / "notes.wav"
    text.write_text("not audio\n" * 100)
    refused = submit_cli(api, str(text))
    assert refused.returncode == 2 and "415" in refused.stderr


def test_sigterm_to_dev_with_a_task_in_flight_loses_nothing(stack, dev_config, receiver, long_audio):
    config, api = dev_config("short-drain.toml", drain_timeout=1)
    dev = stack.start("dev", config=config)
    dev.wait_ready(180)
    accepted = requests.post(f"{api}/v1/tasks", headers={"Authorization": f"Bearer {TOKEN}"},
                             data={"hook_url": receiver.url},
                             files={"audio": ("long.wav", long_audio.open("rb"))}, timeout=60).json()
    task_uuid = accepted["task_uuid"]
    wait_until(lambda: (get_status(api, task_uuid) or {}).get("state") == "processing", 60, "processing")
    dev.signal(signal.SIGTERM)
    assert dev.wait_exit(90) == 0
    assert receiver.requests == []

    again = stack.start("dev", config=config, name="dev-again")
    again.wait_ready(180)
    wait_until(lambda: receiver.successes(), 180, "the webhook after the restart")
    wait_until(lambda: (get_status(api, task_uuid) or {}).get("state") == "delivered", 30, "delivered")
    assert len(receiver.requests) == 1 and json.loads(receiver.requests[0]["body"])["task_uuid"] == task_uuid
    again.signal(signal.SIGTERM)
    assert again.wait_exit(60) == 0


def test_a_child_that_dies_stops_the_whole_stack(stack, dev_config):
    config, _ = dev_config()
    dev = stack.start("dev", config=config)
    dev.wait_ready(180)
    children = dev.children()
    uploader = next(pid for pid in children if b"uploader" in open(f"/proc/{pid}/cmdline", "rb").read())
    os.kill(uploader, signal.SIGKILL)
    assert dev.wait_exit(60) == 1
    assert any(e.get("event") == "a child exited; stopping the stack" and e.get("child") == "uploader"
               for e in dev.log_events())
    for pid in children:
        wait_until(lambda: not os.path.exists(f"/proc/{pid}") or
                   open(f"/proc/{pid}/stat").read().split(") ")[1].startswith("Z"), 30, f"child {pid} to exit")


def minimal_config(stack, port: int, name: str = "minimal.toml") -> Path:
    """What a user writes for `uvrd dev --config`: no [kafka] at all, so the embedded broker runs."""
    path = stack.root / name
    path.write_text(f"""[processor]
model = "{tinymodel.TINY_MODEL}"
model_dir = "{stack.model_dir}"
mdx_hop_length = {tinymodel.HOP_LENGTH}
mdx_segment_size = {tinymodel.SEGMENT_SIZE}
spool_dir = "{stack.spool}"
output_dir = "{stack.output}"
[api]
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}"
tokens = ["{TOKEN}"]
workers = 1
""")
    return path


def child_events(dev, child: str) -> list[dict]:
    """The JSON lines `uvrd dev` relays from *child*, each labelled "<child> | "."""
    events = []
    for line in dev.log_text().splitlines():
        label, _, rest = line.partition("| ")
        if label.strip() == child:
            try:
                events.append(json.loads(rest))
            except ValueError:
                pass
    return events


def test_killing_the_supervisor_takes_every_child_and_the_broker_with_it(stack, tmp_path):
    """SIGKILL leaves the supervisor no clean-up of its own: the kernel must end its children, or they
    keep the api's port and the next `uvrd dev` cannot start."""
    port = free_port()
    config = minimal_config(stack, port)
    dev = stack.start("dev", config=config)
    dev.wait_ready(180)
    tree = set(descendants(dev.pid))
    names = {open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ") for pid in tree}
    assert any(b"tansu" in n or b"broker" in n for n in names), "the embedded broker runs under uvrd dev"
    assert len(tree) >= 5, "broker, api (and its worker), processor (and its engine), uploader"
    # The user's file sets no group timeouts: the daemons get the embedded broker's short ones.
    [ready] = [e for e in child_events(dev, "processor") if e.get("event") == "processor ready"]
    assert ready["session_timeout_ms"] == 6000

    dev.signal(signal.SIGKILL)
    dev.wait_exit(10)
    try:
        wait_until(lambda: all(process_gone(pid) for pid in tree), 30, "every child of the killed supervisor to exit")
    finally:
        for pid in tree:  # what this test started and the defect would leave behind, by PID
            if not process_gone(pid):
                os.kill(pid, signal.SIGKILL)

    again = stack.start("dev", config=config, name="dev-again")
    again.wait_ready(180)
    sample = tinymodel.write_sample(tmp_path / "after.wav", seconds=2)
    done = submit_cli(f"http://127.0.0.1:{port}", str(sample), "--wait")
    assert done.returncode == 0, done.stdout + done.stderr
    again.signal(signal.SIGTERM)
    assert again.wait_exit(60) == 0


def test_the_embedded_broker_gives_short_group_timeouts_but_keeps_the_users_own():
    from uvrd.config.files import load
    from uvrd.cli.dev import embedded_group_env

    plain = embedded_group_env(load(environ={}))
    assert plain == {"UVRD_KAFKA_SESSION_TIMEOUT_MS": "6000", "UVRD_KAFKA_HEARTBEAT_INTERVAL_MS": "1000",
                     "UVRD_KAFKA_MAX_POLL_INTERVAL_MS": "8000"}
    own = embedded_group_env(load(environ={"UVRD_KAFKA_HEARTBEAT_INTERVAL_MS": "3000"}))
    assert "UVRD_KAFKA_HEARTBEAT_INTERVAL_MS" not in own
    assert own["UVRD_KAFKA_SESSION_TIMEOUT_MS"] == "9000", "the session stays three heartbeats long"
    assert embedded_group_env(load(environ={"UVRD_KAFKA_SESSION_TIMEOUT_MS": "45000",
                                            "UVRD_KAFKA_HEARTBEAT_INTERVAL_MS": "3000",
                                            "UVRD_KAFKA_MAX_POLL_INTERVAL_MS": "300000"})) == {}


def durable_config(stack, port: int) -> Path:
    """A file with no [kafka]: `uvrd dev`'s own broker, durable, its data in the state directory."""
    path = minimal_config(stack, port, "durable.toml")
    path.write_text(path.read_text().replace("[api]\n", "[api]\nallow_private_urls = true\n")
                    + '[uploader]\nwebhook_secret = "whsec"\nbackoff_initial = 0.2\nbackoff_max = 1.0\n')
    return path


def test_sigkill_of_the_whole_tree_with_tasks_queued_loses_none_after_a_restart(stack, receiver, long_audio,
                                                                                 tmp_path, record_property):
    """Every task the api answered 202 for is delivered once, after the supervisor, its broker and every
    daemon were SIGKILLed together and `uvrd dev` started again on the same state directory."""
    port = free_port()
    config = durable_config(stack, port)
    api = f"http://127.0.0.1:{port}"
    dev = stack.start("dev", config=config)
    dev.wait_ready(180)
    audio = [long_audio] + [tinymodel.write_sample(tmp_path / f"s{i}.wav", seconds=2) for i in range(5)]
    accepted = []
    for path in audio:
        r = requests.post(f"{api}/v1/tasks", headers={"Authorization": f"Bearer {TOKEN}"},
                          data={"hook_url": receiver.url}, files={"audio": (path.name, path.open("rb"))}, timeout=60)
        assert r.status_code == 202, r.text
        accepted.append(r.json()["task_uuid"])
    wait_until(lambda: (get_status(api, accepted[0]) or {}).get("state") == "processing", 60, "the long task running")
    assert all((get_status(api, u) or {}).get("state") == "queued" for u in accepted[1:]), "tasks wait behind it"

    tree = set(descendants(dev.pid)) | {dev.pid}
    for pid in tree:  # the whole tree at once, as a power cut or an OOM kill of the session would
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: all(process_gone(pid) for pid in tree), 30, "the killed tree to be gone")
    assert receiver.requests == [], "nothing was delivered before the kill"

    again = stack.start("dev", config=config, name="dev-again")
    again.wait_ready(180)
    wait_until(lambda: {json.loads(r["body"])["task_uuid"] for r in receiver.successes()} == set(accepted), 300,
               "a webhook for every accepted task")
    wait_until(lambda: all((get_status(api, u) or {}).get("state") == "delivered" for u in accepted), 60,
               "every task delivered")
    delivered = [json.loads(r["body"])["task_uuid"] for r in receiver.requests]
    assert sorted(delivered) == sorted(accepted), "each task delivered exactly once"
    outcomes = [(json.loads(r["body"])["status"], json.loads(r["body"]).get("error_message")) for r in receiver.requests]
    assert all(status == "success" for status, _ in outcomes), outcomes
    again.signal(signal.SIGTERM)
    assert again.wait_exit(60) == 0
    record_property("summary", f"uvrd dev: {len(accepted)} tasks accepted, tree SIGKILLed with "
                               f"{len(accepted) - 1} queued; after the restart {len(delivered)} webhooks, once each")


def test_ephemeral_keeps_nothing_and_a_second_dev_on_one_state_dir_is_refused(stack, tmp_path):
    port = free_port()
    config = durable_config(stack, port)
    dev = stack.start("dev", config=config)
    dev.wait_ready(180)
    state = stack.root / "xdg-state" / "uvrd" / "broker"
    assert (state / "objects").is_dir(), "the durable broker keeps its data in the state directory"

    second = stack.start("dev", config=durable_config(stack, free_port()), name="dev-second")
    assert second.wait_exit(120) == 1
    assert any(e.get("event") == "the embedded broker did not start" and "another broker uses" in e.get("error", "")
               for e in second.log_events()), second.log_text()[-2000:]
    dev.signal(signal.SIGTERM)
    assert dev.wait_exit(60) == 0


def test_the_state_directory_follows_xdg_state_home(monkeypatch, tmp_path):
    from uvrd.cli.dev import default_state_dir

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert default_state_dir() == tmp_path / "state" / "uvrd"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_state_dir() == tmp_path / "home" / ".local" / "state" / "uvrd"
