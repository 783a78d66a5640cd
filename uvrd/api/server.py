"""``uvrd api``: the Flask application under gunicorn.

gunicorn does the process work: it binds the socket, forks the workers
(each builds its own application and Kafka clients after the fork), and on
SIGTERM closes the socket, lets every worker finish its requests in flight
within the drain window, then exits 0.  Each worker flushes and closes its
Kafka clients in gunicorn's ``worker_exit`` hook, which runs in the worker
itself.  The workers read request heads in their main loop and give a
thread only to complete requests (uvrd/api/worker.py); the master tells
systemd READY and WATCHDOG only while every worker can queue a task
(uvrd/api/watchdog.py).
"""

from __future__ import annotations

import os
import resource
import sys

import structlog
from gunicorn import glogging
from gunicorn.app.base import BaseApplication

from uvrd.api import watchdog
from uvrd.boards import topic_check
from uvrd.api.context import EXTENSION
from uvrd.api.spooler import Spool
from uvrd.api.watchdog import ApiArbiter, ApiWatchdog
from uvrd.api.worker import SlowClientWorker
from uvrd.config import EX_CONFIG, Config
from uvrd.metrics import multiprocess
from uvrd.runtime import drain
from uvrd.runtime.notify import Notifier

log = structlog.get_logger("uvrd.api")

# Requests in flight per worker: uploads and URL fetches wait on the network, not the CPU.
THREADS_PER_WORKER = 8
# Connections one worker holds (idle, kept alive, sending a head, or served): slow clients cost a
# buffer each, not a thread.  Every one is a file descriptor, beside the spool files and Kafka sockets.
WORKER_CONNECTIONS = 1000
FD_MARGIN = 256
# How long the master waits for Kafka's first answer to its topic check before the workers start
# (they serve /healthz meanwhile; the check goes on in the background, ApiArbiter acts on it).
TOPIC_ANSWER_WAIT_S = 5.0
# What the master speaks for itself (uvrd/api/watchdog.py): gunicorn would say READY=1 too early.
SYSTEMD_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def serve(config: Config) -> int:
    """Serve until a stop; the exit status (78 for a spool that cannot be used)."""
    try:
        # Here rather than only in each worker: a spool it cannot use is a configuration error (78),
        # not a worker that fails to boot over and over.
        Spool(config.processor.spool_dir, config.api.max_upload_bytes).prepare()
    except OSError as e:
        log.error("processor.spool_dir cannot be used", spool_dir=str(config.processor.spool_dir), error=str(e))
        return EX_CONFIG
    window = drain.drain_window(config.api.drain_timeout)
    if not config.api.tokens:
        log.warning("api.tokens is empty: every request but the health checks is refused")
    if not config.api.link_secret:
        log.warning("api.link_secret is empty: stem links are unsigned and need a bearer token")
    if "api.public_url" not in config.explicit and config.api.listens_on_wildcard:
        log.warning("api.public_url is not set and api.listen is a wildcard address: links name this host as "
                    f"{config.api.public_url}; set api.public_url to the URL clients reach the api by")
    # Each thread may hold a request's spool files open as well as the worker's connections.
    _raise_open_file_limit(WORKER_CONNECTIONS + FD_MARGIN + THREADS_PER_WORKER * config.api.max_files_per_request)
    # Checked here, in the master, before any worker serves: a missing topic is the unit's exit with
    # 78, not workers that never get ready while gunicorn keeps them going.
    topics = topic_check.BackgroundCheck(config, "api").start()
    if topics.answered.wait(TOPIC_ANSWER_WAIT_S):
        topics.done.wait(topic_check.RECHECK_S + 2 * topic_check.ANSWER_TIMEOUT_MS / 1000)
    if topics.problem is not None:
        log.error(str(topics.problem), missing_topics=list(topics.problem.topics))
        return EX_CONFIG
    if not topics.done.is_set():
        log.warning("Kafka does not answer yet: the topics are checked once it does; the workers start meanwhile",
                    bootstrap_servers=config.kafka.bootstrap_servers)
    log.info("api starting", listen=config.api.listen, workers=config.api.workers, drain_window_s=window,
             public_url=config.api.public_url)
    _serve_metrics(config)
    ApiServer(config, window, topics).run()
    return 0


def _serve_metrics(config: Config) -> None:
    """The workers' metrics, added up, and the queues' backlog, served by this (the master) process."""
    if not config.api.metrics_listen:
        return
    multiprocess.prepare()
    # Only now: prometheus_client reads PROMETHEUS_MULTIPROC_DIR when it is first imported.
    from uvrd.boards.queues import QueueGauge
    from uvrd.metrics import exposition
    from uvrd.metrics.queues import QueueCollector

    exposition.serve(config.api.metrics_listen, os.environ, multiprocess.registry(QueueCollector(QueueGauge(config))))


def child_exit(server, worker) -> None:
    watchdog.child_exit(server, worker)
    multiprocess.worker_exited(worker.pid)


def _raise_open_file_limit(wanted: int) -> None:
    """Each worker is a process with its own descriptors: the soft limit must hold its connections."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted if hard == resource.RLIM_INFINITY
                                                        else min(wanted, hard), hard))
        except (ValueError, OSError):  # the unit's seccomp filter refuses it: LimitNOFILE= decides
            pass
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft != resource.RLIM_INFINITY and soft < wanted:
        log.warning("the open-file limit is below what a worker's connections need; raise LimitNOFILE=",
                    limit=soft, wanted=wanted)


class StructlogLogger(glogging.Logger):
    """gunicorn's own messages through the root handler that logs.configure set up.

    gunicorn's access log stays off: the application writes one structured
    line per request itself, with the task it concerned.
    """

    def setup(self, cfg) -> None:
        super().setup(cfg)
        for logger in (self.error_log, self.access_log):
            for handler in list(logger.handlers):
                logger.removeHandler(handler)
            logger.propagate = True


def post_worker_init(worker) -> None:
    log.info("api worker ready", pid=worker.pid)


def worker_exit(server, worker) -> None:
    app = getattr(worker, "wsgi", None)
    context = getattr(app, "extensions", {}).get(EXTENSION)
    if context is not None:
        context.close()
        log.info("api worker stopped", pid=worker.pid)


class ApiServer(BaseApplication):
    def __init__(self, config: Config, drain_window: float, topics: topic_check.BackgroundCheck):
        self.config = config
        self.drain_window = drain_window
        self.topics = topics
        # Built before the variables go: it keeps the notify socket and the watchdog interval.
        self.watchdog = ApiWatchdog(Notifier(), config.api.ready_timeout)
        for name in SYSTEMD_VARIABLES:
            os.environ.pop(name, None)
        super().__init__()

    def load_config(self) -> None:
        api = self.config.api
        settings = {
            "bind": [api.listen],
            "workers": api.workers,
            "worker_class": SlowClientWorker.configured(api.header_timeout, api.body_timeout),
            "threads": THREADS_PER_WORKER,
            "worker_connections": WORKER_CONNECTIONS,
            "graceful_timeout": max(1, round(self.drain_window)),  # gunicorn takes whole seconds
            "proc_name": "uvrd-api",
            "logger_class": StructlogLogger,
            "post_worker_init": post_worker_init,
            "worker_exit": worker_exit,
            "pre_fork": watchdog.pre_fork,
            "post_fork": watchdog.post_fork,
            "child_exit": child_exit,
            # No runtime control socket: one more thing to secure, and two servers on a host would share its path.
            "control_socket_disable": True,
        }
        for name, value in settings.items():
            self.cfg.set(name, value)

    def run(self):
        try:
            ApiArbiter(self, self.watchdog, self.topics).run()
        except RuntimeError as e:  # as BaseApplication.run, with uvrd's arbiter
            print(f"\nError: {e}\n", file=sys.stderr)
            sys.exit(1)

    def load(self):
        from uvrd.api.app import create_app  # in the worker, after the fork: its Kafka clients are its own

        return create_app(self.config)
