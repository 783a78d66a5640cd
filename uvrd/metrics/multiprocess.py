"""The api's metrics across its gunicorn workers: prometheus_client's multiprocess mode.

Each worker writes its values to files in a directory named by ``PROMETHEUS_MULTIPROC_DIR``; the
master serves their sum.  prometheus_client reads the variable when it is first imported, so
:func:`prepare` runs in the master before anything imports it, and the workers inherit both.  The
directory is new and private to this api (a fresh one at each start, under the unit's
RuntimeDirectory when it has one): values of a previous run or of another api on the host never
add in.  A worker that exits is marked dead, so that its live gauges drop out.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def prepare(environ=os.environ) -> str:
    """Make the directory and name it in *environ*, before prometheus_client is imported."""
    directory = tempfile.mkdtemp(prefix="uvrd-api-metrics-", dir=environ.get("RUNTIME_DIRECTORY") or None)
    environ[VARIABLE] = directory
    pid = os.getpid()
    # The master's exit removes it; a worker's (a fork of the master) must not.
    def remove() -> None:
        if os.getpid() == pid:
            shutil.rmtree(directory, ignore_errors=True)
    atexit.register(remove)
    return directory


def registry(*collectors):
    """What the master serves: every worker's values, and *collectors* of its own."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    served = CollectorRegistry()
    MultiProcessCollector(served)
    for collector in collectors:
        served.register(collector)
    return served


def worker_exited(pid: int) -> None:
    from prometheus_client import multiprocess

    if VARIABLE in os.environ:
        multiprocess.mark_process_dead(pid)
