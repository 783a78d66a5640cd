"""``uvrd dev`` and ``uvrd submit``: the whole pipeline over real HTTP, a real broker and a webhook."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import requests

from support import WebhookReceiver, wait_until
from uvrd import webhook
from uvrd.devtools import tinymodel
from uvrd.devtools.broker import free_port

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
