"""``uvrd broker``: the single-host broker as a daemon (the ``uvrd-broker`` unit).

It starts the object store and Tansu on it (:mod:`uvrd.broker.local`) with its data under
``broker.data_dir``, creates uvrd's topics where missing, and sends READY=1 once the broker
answers Kafka requests; the other units order themselves after it.  WATCHDOG=1 goes out while
both children run and answer.  SIGTERM stops the broker, then the store it writes to.  A child
that exits takes this process down with status 1: the two are one service, and systemd restarts
both.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import structlog

from uvrd.config import EX_CONFIG, Config, ConfigError
from uvrd.runtime.deadline import Deadline
from uvrd.runtime.lifecycle import Lifecycle
from uvrd.runtime.notify import Notifier

log = structlog.get_logger("uvrd.broker")

TURN_S = 0.5


def serve(config: Config, data_dir: Path | None = None, listen: str | None = None) -> int:
    """Run the broker until a stop; *data_dir* and *listen* override the configuration's."""
    from uvrd.broker.local import BrokerInUse, LocalBroker

    try:
        settings = _with_overrides(config.broker, data_dir, listen)
    except ConfigError as e:
        log.error("configuration error", error=str(e))
        return EX_CONFIG
    lifecycle = Lifecycle(Notifier(), drain_window=0.0)
    with lifecycle.signals_installed(), contextlib.ExitStack() as stack:
        lifecycle.notifier.status("starting the object store and the broker")
        broker = LocalBroker(settings.data_dir, settings.host, settings.port, die_with_parent=True)
        try:
            broker.start(Deadline.after(settings.start_timeout))
        except BrokerInUse as e:
            log.error("the data directory is in use", error=str(e))
            return 1
        except (RuntimeError, OSError) as e:
            log.error("the broker did not start", error=str(e), data_dir=str(settings.data_dir))
            return 1
        stack.callback(_stop, broker)
        created = broker.create_uvrd_topics(config.topics, settings.task_partitions)
        if created:
            log.info("topics created", topics=created, task_partitions=settings.task_partitions)
        log.info("broker ready", bootstrap=broker.bootstrap, data_dir=str(settings.data_dir))
        lifecycle.notifier.ready(f"serving Kafka on {broker.bootstrap}")
        return _supervise(broker, lifecycle)


def _with_overrides(settings, data_dir: Path | None, listen: str | None):
    import dataclasses

    changed: dict[str, object] = {}
    if data_dir is not None:
        changed["data_dir"] = data_dir
    if listen is not None:
        changed["listen"] = listen
    settings = dataclasses.replace(settings, **changed)
    settings.validate()
    return settings


def _supervise(broker, lifecycle: Lifecycle) -> int:
    status = f"serving Kafka on {broker.bootstrap}"
    while True:
        lifecycle.process_signals()
        if lifecycle.stopping:
            return 0
        dead = broker.dead_child()
        if dead is not None:
            log.error("a child of the broker exited: stopping, for systemd to restart both", child=dead)
            return 1
        lifecycle.tick(status, broker.healthy)
        time.sleep(TURN_S)


def _stop(broker) -> None:
    started = time.monotonic()
    broker.stop()
    log.info("broker stopped", stop_s=round(time.monotonic() - started, 3))
