"""The whole service as a user meets it: ``uvrd api``, ``processor`` and ``uploader`` as
subprocesses on a real broker, audio submitted over HTTP, the signed webhook received on
loopback, and the stems downloaded through the links it carries (with the same client code
``uvrd submit --output`` uses)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import requests
import scrape
from support import WebhookReceiver, wait_until

from uvrd.client import stem_download
from uvrd.broker.loopback import free_port
from devtools.model_catalogue import InstalledModel
from uvrd.uploader import webhook

TOKEN = "pipeline-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
WEBHOOK_SECRET = "whsec"


def api_settings() -> dict:
    port = free_port()
    return {"listen": f"127.0.0.1:{port}", "public_url": f"http://127.0.0.1:{port}", "tokens": [TOKEN],
            "workers": 1, "allow_private_urls": True, "metrics_listen": scrape.listen()}


def start_api(stack, config: Path) -> str:
    """Start the api of *config*; its base URL once it answers."""
    daemon = stack.start("api", config=config)
    url = "http://" + next(line for line in config.read_text().splitlines()
                           if line.startswith("listen")).split('"')[1]

    def healthy():
        assert daemon.proc.poll() is None, daemon.log_text()[-3000:]
        try:
            return requests.get(url + "/healthz", timeout=5).status_code == 200
        except requests.ConnectionError:
            return False
    wait_until(healthy, 60, "the api to answer", interval=0.1)
    return url


def submit(url: str, audio: Path, hook_url: str | None, **fields) -> str:
    with open(audio, "rb") as f:
        response = requests.post(url + "/v1/tasks", headers=AUTH, files={"audio": (audio.name, f)},
                                 data={**fields, **({"hook_url": hook_url} if hook_url else {})}, timeout=120)
    assert response.status_code == 202, response.text
    return response.json()["task_uuid"]


@dataclass(frozen=True)
class Separated:
    task_uuid: str
    webhook: dict  # the signed webhook's body
    status: dict  # the api's status answer once the task is delivered
    stems: dict[str, Path]  # each stem, downloaded through the webhook's link


class SeparationService:
    """One processor serving *models* (the first is the default; a task may name any), the
    uploader and the api, on *stack*'s topics; *storage* puts inputs and stems in a bucket;
    *processor_env* is added to the processor's environment.
    :attr:`metrics` names each daemon's metrics_listen, for scrape.scrape."""

    def __init__(self, stack, models: list[InstalledModel], model_dir: Path, storage: dict | None = None,
                 processor_env: dict | None = None, **processor):
        first = models[0]
        settings = {"model": first.filename, "model_dir": str(model_dir),
                    "extra_models": [m.filename for m in models[1:]], **dict(first.processor_settings),
                    "job_timeout": 300, **processor}
        self.stack = stack
        self.downloads = stack.root / "downloads"
        self.metrics = {"processor": scrape.listen(), "uploader": scrape.listen()}
        api = api_settings()
        self.metrics["api"] = api["metrics_listen"]
        self.config = stack.write_config("service.toml", storage=storage, api=api,
                                         uploader={"webhook_secret": WEBHOOK_SECRET,
                                                   "metrics_listen": self.metrics["uploader"]},
                                         **{**settings, "metrics_listen": self.metrics["processor"]})
        self.receiver = WebhookReceiver()
        self.processor_env = processor_env  # the processor's environment, for a test that starts it again
        self.processor = stack.start("processor", config=self.config, env=processor_env)
        self.uploader = stack.start("uploader", config=self.config)
        self.url = start_api(stack, self.config)
        self.processor.wait_ready(300)
        self.uploader.wait_ready()

    def separate(self, audio: Path, timeout: float = 300, **fields) -> Separated:
        """Submit *audio* (with form *fields*: model, output_format, ...) and follow it to its stems."""
        task_uuid = submit(self.url, audio, self.receiver.url, **fields)
        [delivery] = wait_until(lambda: [d for d in self.receiver.successes()
                                         if json.loads(d["body"])["task_uuid"] == task_uuid],
                                timeout, f"the webhook of task {task_uuid}", interval=0.2)
        assert webhook.verify(WEBHOOK_SECRET, delivery["headers"][webhook.SIGNATURE_HEADER], delivery["body"])
        body = json.loads(delivery["body"])
        assert body["status"] == "success", body
        # The api's board reads the status topic on its own: it may learn of the delivery a moment later.
        status = wait_until(lambda: (s := requests.get(f"{self.url}/v1/tasks/{task_uuid}", headers=AUTH,
                                                       timeout=10).json()).get("state") == "delivered" and s,
                            30, "the api's status to say delivered", interval=0.2)
        directory = self.downloads / task_uuid
        directory.mkdir(parents=True)
        stems = {name: stem_download.download(url, directory, audio, name) for name, url in body["stems"].items()}
        return Separated(task_uuid, body, status, stems)

    def get(self, path: str) -> dict:
        """A GET of the api with the token: its JSON, once it answered 200."""
        response = requests.get(f"{self.url}{path}", headers=AUTH, timeout=10)
        assert response.status_code == 200, response.text
        return response.json()

    def close(self) -> None:
        self.receiver.close()
