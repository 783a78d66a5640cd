from __future__ import annotations

import contextlib
import itertools
import os
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from inprocess import InProcessDaemon
from separation_service import SeparationService
from support import PATIENCE, FAST_GROUP, Daemon, InstalledIn, KafkaView, NotifySocket, real_assets, toml_value
from uvrd.broker.tansu import TansuBroker
from uvrd.config import TopicsConfig
from devtools import denoise_model, musdb_excerpt, spleeter_model, tinymodel

# One torch thread in every process the tests start (engine children, daemons, `uvrd dev`), inherited
# from here.  Four test processes, each with its daemons and engine children, share CI's two cores,
# and torch's OpenMP threads spin while they wait for each other: 150 s of audio through the tiny
# model took 15 s of CPU with one thread and 42 to 47 s with two, beside the suite's other work (and
# 53 to 73 s of wall time against 91 to 133 s).
os.environ.setdefault("OMP_NUM_THREADS", "1")

# The api's stacks (`uvrd api` on the session broker, an audio origin) serve the service and system tiers.
pytest_plugins = ["api_stacks"]

# `make test`'s scheduler hands out whole modules: a module's tests share its module-scoped daemons
# (a processor's model, a whole service), which a test-by-test split would start once per test
# process.  The longest modules go first, so that no test process starts one of them when the others
# are nearly done: each package module boots its own container, and the upgrade unpacks the 3.7 GB
# package again in its own.
FIRST = (
    "tests/system/packaging/test_package_upgrade.py",
    "tests/system/packaging/test_package.py",
    "tests/system/packaging/test_package_restarts.py",
    "tests/system/packaging/test_single_host.py",
    # The longest of the others in r15 (seconds from its first test's start to its last's end, four
    # test processes on 2 cores): processor signals 537, devstack 378 (given out at 754 s, it was
    # the tier's last module to end), ensembles 341, architectures 338, long audio 331.
    "tests/system/test_processor_signals.py",
    "tests/system/test_devstack.py",
    "tests/system/test_ensembles.py",
    "tests/system/test_architectures.py",
    "tests/system/test_long_audio.py",
)


PACKAGING = "tests/system/packaging/"


@pytest.hookimpl(tryfirst=True)
def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadFileScheduling

    sys.path.insert(0, str(Path(__file__).parent / "system" / "packaging"))
    from deb_build import prebuild_running

    class LongestFirst(LoadFileScheduling):
        def _assign_work_unit(self, node) -> None:
            # The rest keep xdist's order (the modules with the most tests first).  While `make test`'s
            # prebuild still makes the package and its layer, the package modules go last: given out
            # first, every test process waited on the layer (5 minutes of r11's system tier), where
            # the other modules could run.  Asked again at each module given out.
            building = prebuild_running()
            for module in reversed(FIRST):
                if module in self.workqueue:
                    if building and module.startswith(PACKAGING):
                        self.workqueue.move_to_end(module)
                    else:
                        self.workqueue.move_to_end(module, last=False)
            super()._assign_work_unit(node)

    return LongestFirst(config, log)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """Each test's own time limit (its mark, or the configured one) stretched by the run's patience, as
    its waits are (support.PATIENCE): the limit only ends a test that hangs."""
    default = float(config.getini("timeout") or 0)
    for item in items:
        mark = item.get_closest_marker("timeout")
        limit = float(mark.args[0] if mark and mark.args else mark.kwargs.get("timeout", default) if mark else default)
        if limit:
            item.add_marker(pytest.mark.timeout(limit * PATIENCE), append=False)


@pytest.fixture(scope="session")
def broker(tmp_path_factory):
    """One real broker per test process, on a free loopback port."""
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    with TansuBroker(log_path=log) as b:
        yield b


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("models")
    tinymodel.install(d)
    return d


@pytest.fixture(scope="session")
def musdb():
    """A MUSDB18 excerpt with its true stems (devtools.musdb_excerpt); a skip if the registry is out of reach."""
    return real_assets(musdb_excerpt.excerpt)


@pytest.fixture(scope="session")
def spleeter_models(tmp_path_factory) -> InstalledIn:
    """A model directory with the real Spleeter 2-stems model (MDX), built once into the asset cache."""
    d = tmp_path_factory.mktemp("spleeter")
    return InstalledIn(d, real_assets(lambda: spleeter_model.install(d)))


@pytest.fixture(scope="session")
def denoise_models(tmp_path_factory) -> InstalledIn:
    """A model directory with UVR's real VR model UVR-DeNoise-Lite."""
    d = tmp_path_factory.mktemp("denoise")
    return InstalledIn(d, real_assets(lambda: denoise_model.install(d)))


@pytest.fixture(scope="session")
def long_audio(tmp_path_factory) -> Path:
    """Long enough that its separation outlasts the timeouts the tests set (about 8 s on CI's CPU)."""
    return tinymodel.write_sample(tmp_path_factory.mktemp("audio") / "long.wav", seconds=150)


@pytest.fixture
def kafka(broker):
    view = KafkaView(broker.bootstrap)
    yield view
    view.close()


_names = itertools.count()


@dataclass
class Stack:
    """One test's topics, directories and config: tests never share a topic or a group."""

    root: Path
    bootstrap: str
    model_dir: Path
    tasks: str
    results: str
    dead_letter: str
    status: str
    cancellations: str
    workers: str
    events: str
    replays: str
    keys: str
    group: str
    partitions: int
    daemons: list

    @property
    def topics(self) -> TopicsConfig:
        return TopicsConfig(tasks=self.tasks, results=self.results, dead_letter=self.dead_letter, status=self.status,
                            cancellations=self.cancellations, workers=self.workers,
                            events=self.events, replays=self.replays, keys=self.keys)

    @property
    def spool(self) -> Path:
        return self.root / "spool"

    @property
    def output(self) -> Path:
        return self.root / "output"

    def write_config(self, name: str = "uvrd.toml", kafka: dict | None = None, uploader: dict | None = None,
                     api: dict | None = None, storage: dict | None = None, **processor) -> Path:
        settings = {
            "group_id": self.group, "model": tinymodel.TINY_MODEL, "model_dir": str(self.model_dir),
            "spool_dir": str(self.spool), "output_dir": str(self.output), "output_format": "wav",
            "mdx_hop_length": tinymodel.HOP_LENGTH, "mdx_segment_size": tinymodel.SEGMENT_SIZE,
            "drain_timeout": 60, "engine_stall_timeout": 5,
            # No /metrics unless a test asks for it on a port of its own (scrape.listen()).
            "metrics_listen": "", **processor,
        }
        lines = ["[kafka]", f'bootstrap_servers = "{self.bootstrap}"']
        lines += [f"{k} = {v}" for k, v in {**FAST_GROUP, **(kafka or {})}.items()]
        lines += ["[topics]", f'tasks = "{self.tasks}"', f'results = "{self.results}"',
                  f'dead_letter = "{self.dead_letter}"', f'status = "{self.status}"',
                  f'cancellations = "{self.cancellations}"', f'workers = "{self.workers}"',
                  f'events = "{self.events}"', f'replays = "{self.replays}"', f'keys = "{self.keys}"',
                  "[processor]"]
        lines += [f"{k} = {toml_value(v)}" for k, v in settings.items()]
        uploader = {"group_id": f"{self.group}-uploader", "webhook_secret": "whsec", "backoff_initial": 0.2,
                    "backoff_max": 1.0, "timeout": 5, "metrics_listen": "", **(uploader or {})}
        lines += ["[uploader]"] + [f"{k} = {toml_value(v)}" for k, v in uploader.items()]
        api = {"public_url": "http://127.0.0.1:9", "link_secret": "links", "allow_private_urls": True,
               "metrics_listen": "", **(api or {})}
        lines += ["[api]"] + [f"{k} = {toml_value(v)}" for k, v in api.items()]
        if storage:
            lines += ["[storage]"] + [f"{k} = {toml_value(v)}" for k, v in storage.items()]
        path = self.root / name
        path.write_text("\n".join(lines) + "\n")
        return path

    def start(self, command: str = "processor", config: Path | None = None, watchdog_usec: int | None = None,
              env: dict | None = None, name: str | None = None) -> Daemon:
        name = name or f"{command}{len(self.daemons)}"
        (self.root / name).mkdir()
        notify = NotifySocket(self.root / name)
        daemon = Daemon(command, config or self.write_config(), self.root / f"{name}.log", notify,
                        env={"XDG_STATE_HOME": str(self.root / "xdg-state"),  # never the user's home
                             "UVRD_PROCESSOR_TRANSACTIONAL_ID": f"{self.group}-{name}-processor",
                             "UVRD_UPLOADER_TRANSACTIONAL_ID": f"{self.group}-{name}-uploader", **(env or {})},
                        watchdog_usec=watchdog_usec)
        self.daemons.append(daemon)
        return daemon

    def in_process(self, handler_class, config: Path | None = None, name: str | None = None,
                   env: dict | None = None, **handler_kwargs) -> InProcessDaemon:
        """A daemon in the test process (inprocess.py), configured as :meth:`start` configures a
        subprocess one, with its own transactional id; started and stopped at the end of the test."""
        from uvrd.config.files import load

        name = name or f"{handler_class.name}{len(self.daemons)}"
        environ = {"UVRD_PROCESSOR_TRANSACTIONAL_ID": f"{self.group}-{name}-processor",
                   "UVRD_UPLOADER_TRANSACTIONAL_ID": f"{self.group}-{name}-uploader", **(env or {})}
        cfg = load(config or self.write_config(), environ=environ)
        daemon = InProcessDaemon(cfg, handler_class(cfg, environ, **handler_kwargs), environ).start()
        self.daemons.append(daemon)
        return daemon

    def task(self, audio: Path | str, **fields) -> dict:
        task_uuid = fields.pop("task_uuid", str(uuid.uuid4()))
        return {"task_uuid": task_uuid, "audio_path": str(audio), "hook_url": "http://hooks.example/cb", **fields}

    def spool_copy(self, source: Path, name: str | None = None) -> Path:
        self.spool.mkdir(parents=True, exist_ok=True)
        target = self.spool / (name or f"{uuid.uuid4()}{source.suffix}")
        target.write_bytes(source.read_bytes())
        return target


@contextlib.contextmanager
def _stack(broker, model_dir, root: Path, name: str, partitions: int = 1):
    n = next(_names)
    prefix = f"t{n}-{name[:40]}".replace("[", "-").replace("]", "")
    s = Stack(root=root, bootstrap=broker.bootstrap, model_dir=model_dir, tasks=f"{prefix}.tasks",
              results=f"{prefix}.results", dead_letter=f"{prefix}.dlq", status=f"{prefix}.status",
              cancellations=f"{prefix}.cancel", workers=f"{prefix}.workers", events=f"{prefix}.events",
              replays=f"{prefix}.replays", keys=f"{prefix}.keys", group=f"{prefix}.group", partitions=partitions, daemons=[])
    broker.create_uvrd_topics(s.topics, task_partitions=partitions)
    (root / "spool").mkdir()
    try:
        yield s
    finally:
        # The in-process daemons are stopped together: their engines' children share the test
        # process's resource tracker, which the first processor to stop waits for until every child is gone.
        for d in s.daemons:
            if isinstance(d, InProcessDaemon) and d.running:
                d.daemon.stop()
        for d in s.daemons:
            if isinstance(d, InProcessDaemon):
                if d.running:
                    d.wait_exit()
                continue
            d.stop()
            if d.notify:
                d.notify.close()


@pytest.fixture
def stack(broker, model_dir, tmp_path, request):
    with _stack(broker, model_dir, tmp_path, request.node.name, getattr(request, "param", 1)) as s:
        yield s


@pytest.fixture(scope="module")
def module_stacks(broker, model_dir, tmp_path_factory):
    """Make stacks that serve a whole module's tests: for daemons that are slow to start and serve
    every test alike.  ``module_stacks(name)``; each has its own topics and directories."""
    with contextlib.ExitStack() as stacks:
        def make(name: str) -> Stack:
            return stacks.enter_context(_stack(broker, model_dir, tmp_path_factory.mktemp(name), name))
        yield make


@pytest.fixture(scope="module")
def module_stack(module_stacks, request):
    return module_stacks(request.module.__name__.rsplit(".", 1)[-1])


@pytest.fixture(scope="module")
def service(module_stack, model_dir):
    """The whole service (api, processor, uploader) serving the tiny model, for a module's tests;
    a module that needs other settings defines its own ``service``."""
    svc = SeparationService(module_stack, [tinymodel.install(model_dir)], model_dir)
    yield svc
    svc.close()


@pytest.fixture(scope="session")
def objectstore(tmp_path_factory):
    """One real S3-compatible server (SeaweedFS) per test process, on free loopback ports."""
    from uvrd.broker.object_store import ObjectStore

    root = tmp_path_factory.mktemp("objectstore")
    with ObjectStore(root / "data", log_path=root / "weed.log") as store:
        yield store


def pytest_terminal_summary(terminalreporter):
    """The one-line summaries tests record (``record_property("summary", line)``), shown at the
    end of the run even under xdist, which swallows a passing test's output."""
    lines = [value for report in terminalreporter.stats.get("passed", [])
             for name, value in getattr(report, "user_properties", ()) if name == "summary"]
    if lines:
        terminalreporter.write_sep("-", "summaries")
        for line in lines:
            terminalreporter.write_line(line)
