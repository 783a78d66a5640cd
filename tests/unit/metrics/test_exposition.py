"""Where a daemon serves /metrics: a per-GPU unit on a port of its own, a taken port a warning (the
daemon runs on), the api's workers added up by its master, the drain's time while it lasts."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import requests
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from uvrd.broker.loopback import free_port
from uvrd.metrics import drain, exposition
from uvrd.runtime.lifecycle import Lifecycle
from uvrd.runtime.notify import Notifier


def test_a_per_gpu_unit_adds_its_instance_number_to_the_port():
    assert exposition.instance_offset("uvrd-processor@3.service") == 3
    assert exposition.instance_offset("uvrd-processor@0.service") == 0
    assert exposition.instance_offset("uvrd-processor.service") == 0
    assert exposition.instance_offset(None) == 0
    assert exposition.address("127.0.0.1:9470", {}) == ("127.0.0.1", 9470)  # not under systemd: as configured
    assert exposition.address("", {}) is None


def test_metrics_are_served_over_http_and_a_taken_port_is_a_warning_not_a_crash():
    listen = f"127.0.0.1:{free_port()}"
    assert exposition.serve(listen, {}) == ("127.0.0.1", int(listen.rpartition(":")[2]))
    answer = requests.get(f"http://{listen}/metrics", timeout=10)
    assert answer.status_code == 200
    assert "python_info" in {f.name for f in text_string_to_metric_families(answer.text)}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert exposition.serve(f"127.0.0.1:{taken.getsockname()[1]}", {}) is None


def test_the_drain_gauge_grows_from_the_stop_request():
    now = [1000.0]
    lifecycle = Lifecycle(Notifier(), 42.0, clock=lambda: now[0])
    drain.watch(lifecycle)
    assert REGISTRY.get_sample_value("uvrd_drain_window_seconds") == 42.0
    now[0] += 5
    assert REGISTRY.get_sample_value("uvrd_drain_elapsed_seconds") == 0.0
    lifecycle.handle_term()
    now[0] += 7.5
    assert REGISTRY.get_sample_value("uvrd_drain_elapsed_seconds") == 7.5


def test_the_api_master_serves_the_sum_of_its_workers_and_removes_their_files(tmp_path):
    """As gunicorn does it: the master prepares the directory, forks the workers, marks each dead."""
    script = textwrap.dedent("""
        import os
        from uvrd.metrics import multiprocess
        directory = multiprocess.prepare()
        print(directory)
        from prometheus_client import generate_latest
        from uvrd.metrics import api
        workers = []
        for _ in range(3):
            pid = os.fork()
            if pid == 0:
                api.TASKS.labels("queued", "").inc()
                os._exit(0)
            workers.append(pid)
        for pid in workers:
            os.waitpid(pid, 0)
            multiprocess.worker_exited(pid)
        print(generate_latest(multiprocess.registry()).decode())
    """)
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env["RUNTIME_DIRECTORY"] = str(tmp_path)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert run.returncode == 0, run.stderr
    directory, exposed = run.stdout.split("\n", 1)
    assert Path(directory).parent == tmp_path, "under the unit's RuntimeDirectory"
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(exposed) for s in f.samples}
    assert samples[("uvrd_api_tasks_total", (("outcome", "queued"), ("reason", "")))] == 3
    assert not Path(directory).exists(), "the master's exit removes the workers' files"
