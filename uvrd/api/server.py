"""``uvrd api``: the Flask application under gunicorn.

gunicorn does the process work: it binds the socket, forks the workers
(each builds its own application and Kafka clients after the fork), tells
systemd READY=1 when NOTIFY_SOCKET is set, and on SIGTERM closes the
socket, lets every worker finish its requests in flight within the drain
window, then exits 0.  Each worker flushes and closes its Kafka clients in
gunicorn's ``worker_exit`` hook, which runs in the worker itself.
"""

from __future__ import annotations

import structlog
from gunicorn import glogging
from gunicorn.app.base import BaseApplication

from .. import drain, logs
from ..cli import add_config_argument, load_config
from ..config import EX_CONFIG, Config
from .context import EXTENSION
from .spooler import Spool

log = structlog.get_logger("uvrd.api")

# Requests in flight per worker: uploads and URL fetches wait on the network, not the CPU.
THREADS_PER_WORKER = 8


def add_arguments(parser) -> None:
    add_config_argument(parser)


def run(args) -> int:
    config = load_config(args)
    logs.configure("uvrd-api")
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
    log.info("api starting", listen=config.api.listen, workers=config.api.workers, drain_window_s=window,
             public_url=config.api.public_url)
    ApiServer(config, window).run()
    return 0


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
    def __init__(self, config: Config, drain_window: float):
        self.config = config
        self.drain_window = drain_window
        super().__init__()

    def load_config(self) -> None:
        settings = {
            "bind": [self.config.api.listen],
            "workers": self.config.api.workers,
            "worker_class": "gthread",
            "threads": THREADS_PER_WORKER,
            "graceful_timeout": max(1, round(self.drain_window)),  # gunicorn takes whole seconds
            "proc_name": "uvrd-api",
            "logger_class": StructlogLogger,
            "post_worker_init": post_worker_init,
            "worker_exit": worker_exit,
            # No runtime control socket: one more thing to secure, and two servers on a host would share its path.
            "control_socket_disable": True,
        }
        for name, value in settings.items():
            self.cfg.set(name, value)

    def load(self):
        from .app import create_app  # in the worker, after the fork: its Kafka clients are its own

        return create_app(self.config)
