"""The API under test: ``uvrd api`` as a subprocess on a real broker, and a
local HTTP origin for the audio URLs it fetches.

Two long-lived servers serve most tests (each test reads back only its own
task_uuid): ``public_api`` refuses private addresses as production does,
``open_api`` allows them so it can fetch from the loopback origin.  Tests
that stop or break a server start their own through ``api_stack``.
"""

from __future__ import annotations

import http.server
import itertools
import json
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from support import Daemon, NotifySocket, toml_value, wait_until
from uvrd.broker.loopback import free_port
from uvrd.broker.tansu import TansuBroker
from uvrd.config import TopicsConfig
from devtools import tinymodel

TOKEN = "t0k3n"
BASIC = ("old", "secret")
LINK_SECRET = "link-secret-for-tests"
MAX_UPLOAD = 2_000_000
# A public address: the API checks a hook_url but never calls it.
PUBLIC_HOOK = "https://93.184.215.14/hooks/uvrd"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

_names = itertools.count()


@dataclass
class ApiServer:
    daemon: Daemon
    url: str
    stack: ApiStack

    # What the tests' configurations hold, for the tests to use without importing this module.
    TOKEN = TOKEN
    AUTH = AUTH
    BASIC = BASIC
    LINK_SECRET = LINK_SECRET
    MAX_UPLOAD = MAX_UPLOAD
    PUBLIC_HOOK = PUBLIC_HOOK

    def get(self, path: str, **kwargs) -> requests.Response:
        return requests.get(self.url + path, timeout=30, **kwargs)

    def post(self, path: str, **kwargs) -> requests.Response:
        return requests.post(self.url + path, timeout=30, **kwargs)

    def upload(self, audio: Path | bytes, headers=AUTH, **form) -> requests.Response:
        content = audio if isinstance(audio, bytes) else audio.read_bytes()
        return self.post("/v1/tasks", headers=headers, files={"audio": ("upload.bin", content)},
                         data={"hook_url": PUBLIC_HOOK, **form})

    def submit_url(self, audio_url: str, headers=AUTH, **fields) -> requests.Response:
        return self.post("/v1/tasks", headers=headers, json={"audio": audio_url, "hook_url": PUBLIC_HOOK, **fields})

    def wait_healthy(self, timeout: float = 60) -> None:
        def healthy():
            if self.daemon.proc.poll() is not None:
                raise AssertionError(f"api exited with {self.daemon.proc.returncode}:\n"
                                     f"{self.daemon.log_text()[-3000:]}")
            try:
                return self.get("/healthz").status_code == 200
            except requests.ConnectionError:
                return False
        wait_until(healthy, timeout, "GET /healthz to answer 200", interval=0.1)


@dataclass
class ApiStack:
    """One server's topics, directories and config: servers never share a topic."""

    root: Path
    bootstrap: str
    topics: TopicsConfig
    daemons: list = field(default_factory=list)

    @property
    def spool(self) -> Path:
        return self.root / "spool"

    @property
    def output(self) -> Path:
        return self.root / "output"

    def write_config(self, name: str = "uvrd.toml", kafka: dict | None = None, **api) -> Path:
        port = free_port()
        settings = {
            "listen": f"127.0.0.1:{port}", "public_url": f"http://127.0.0.1:{port}", "workers": 2,
            "tokens": [TOKEN], "basic_auth": [":".join(BASIC)], "link_secret": LINK_SECRET,
            "max_upload_bytes": MAX_UPLOAD, "allow_private_urls": False, "fetch_timeout": 5.0,
            "drain_timeout": 20.0, "metrics_listen": "", **api,  # no /metrics: the fleet tests scrape it
        }
        t = self.topics
        lines = ["[kafka]", f"bootstrap_servers = {toml_value(self.bootstrap)}",
                 *[f"{k} = {toml_value(v)}" for k, v in (kafka or {}).items()],
                 "[topics]", f"tasks = {toml_value(t.tasks)}", f"results = {toml_value(t.results)}",
                 f"dead_letter = {toml_value(t.dead_letter)}", f"status = {toml_value(t.status)}",
                 f"keys = {toml_value(t.keys)}", f"idempotency = {toml_value(t.idempotency)}",
                 "[processor]", f"model = {toml_value(tinymodel.TINY_MODEL)}", 'extra_models = ["Other.onnx"]',
                 f"spool_dir = {toml_value(str(self.spool))}", f"output_dir = {toml_value(str(self.output))}",
                 "[api]", *[f"{k} = {toml_value(v)}" for k, v in settings.items()]]
        path = self.root / name
        path.write_text("\n".join(lines) + "\n")
        return path

    def start(self, config: Path | None = None, wait: bool = True, env: dict | None = None,
              watchdog_usec: int | None = None, **api) -> ApiServer:
        config = config or self.write_config(**api)
        name = f"api{len(self.daemons)}"
        (self.root / name).mkdir()
        notify = NotifySocket(self.root / name)
        daemon = Daemon("api", config, self.root / f"{name}.log", notify, env=env, watchdog_usec=watchdog_usec)
        self.daemons.append(daemon)
        listen = next(line for line in config.read_text().splitlines() if line.startswith("listen"))
        server = ApiServer(daemon, "http://" + listen.split('"')[1], self)
        if wait:
            server.wait_healthy()
        return server

    def records(self, kafka, topic: str, task_uuid: str) -> list[dict]:
        """The values on *topic* keyed by *task_uuid*, oldest first."""
        return [json.loads(r.value) for r in kafka.read_all(topic) if r.key == task_uuid.encode()]

    def incoming(self) -> list[Path]:
        """Temporary files of uploads or fetches: none may outlive its request."""
        return sorted(self.spool.glob(".incoming-*"))

    def close(self) -> None:
        for d in self.daemons:
            d.stop()
            d.notify.close()


def make_stack(broker, root: Path, label: str) -> ApiStack:
    prefix = f"api{next(_names)}-{label}"
    topics = TopicsConfig(tasks=f"{prefix}.tasks", results=f"{prefix}.results", dead_letter=f"{prefix}.dlq",
                          status=f"{prefix}.status", keys=f"{prefix}.keys", idempotency=f"{prefix}.idem")
    broker.create_uvrd_topics(topics)
    stack = ApiStack(root=root, bootstrap=broker.bootstrap, topics=topics)
    stack.output.mkdir(parents=True)
    return stack


@pytest.fixture
def api_stack(broker, tmp_path, request):
    stack = make_stack(broker, tmp_path, request.node.name[:30].replace("[", "-").replace("]", ""))
    yield stack
    stack.close()


@pytest.fixture
def own_broker_stack(tmp_path, request):
    """(broker, stack) on a broker of the test's own, which it may pause without stopping other tests' servers."""
    with TansuBroker(log_path=tmp_path / "broker.log") as broker:
        stack = make_stack(broker, tmp_path, request.node.name[:30].replace("[", "-").replace("]", ""))
        yield broker, stack
        stack.close()


@pytest.fixture(scope="session")
def public_api(broker, tmp_path_factory):
    """Production's SSRF rules: loopback and private addresses are refused."""
    stack = make_stack(broker, tmp_path_factory.mktemp("public-api"), "public")
    yield stack.start()
    stack.close()


@pytest.fixture(scope="session")
def open_api(broker, tmp_path_factory):
    """Private addresses allowed (to fetch from the loopback origin); one worker, so a status
    record the test writes is seen by whichever request asks next."""
    stack = make_stack(broker, tmp_path_factory.mktemp("open-api"), "open")
    yield stack.start(allow_private_urls=True, workers=1)
    stack.close()


@pytest.fixture(scope="session")
def fuzzed_api(broker, tmp_path_factory):
    """For schemathesis, whose accepted tasks must not mix with other tests' records."""
    stack = make_stack(broker, tmp_path_factory.mktemp("fuzzed-api"), "fuzzed")
    server = stack.start(allow_private_urls=True, fetch_timeout=2.0)
    # Ready, not only alive: a /readyz the fuzzer sends while the status topic still loads is a 503.
    server.daemon.wait_ready(60)
    yield server
    stack.close()


@pytest.fixture(scope="session")
def sample(tmp_path_factory) -> Path:
    return tinymodel.write_sample(tmp_path_factory.mktemp("audio") / "sample.wav", seconds=1)


@pytest.fixture(scope="session")
def oversize(tmp_path_factory) -> Path:
    path = tinymodel.write_sample(tmp_path_factory.mktemp("audio") / "oversize.wav", seconds=15)
    assert path.stat().st_size > MAX_UPLOAD
    return path


class Origin:
    """A loopback HTTP server the API fetches audio URLs from.

    ``/files/<name>`` serves a registered body, or 404; a name given to
    :meth:`hold` is answered only once the test releases it, so a request to
    the API can be kept in flight.
    """

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.holds: dict[str, tuple[threading.Event, threading.Event]] = {}
        self.hits: list[str] = []
        origin = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                origin.hits.append(self.path)
                name = self.path.rpartition("/")[2]
                if name in origin.holds:
                    reached, release = origin.holds[name]
                    reached.set()
                    release.wait(60)
                body = origin.files.get(name) if self.path.startswith("/files/") else None
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def serve(self, body: bytes, name: str | None = None) -> str:
        name = name or f"{uuid.uuid4()}.bin"
        self.files[name] = body
        return f"{self.url}/files/{name}"

    def hold(self, url: str) -> tuple[threading.Event, threading.Event]:
        """(reached, release) for the file at *url*: set release to let its answer go."""
        events = (threading.Event(), threading.Event())
        self.holds[url.rpartition("/")[2]] = events
        return events

    def close(self) -> None:
        for _, release in self.holds.values():
            release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="session")
def origin():
    o = Origin()
    yield o
    o.close()
