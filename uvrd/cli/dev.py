"""``uvrd dev``: the whole stack in the foreground, for a laptop, with no systemd.

An embedded broker unless kafka.bootstrap_servers is configured, with short
consumer-group timeouts unless the configuration sets them: durable by default
(Tansu on a local object store, :mod:`uvrd.broker.local`, its data in the state
directory, so a Ctrl+C, a crash or a reboot loses no queued task), or in memory
with ``--ephemeral``; the topics created; then api, processor and uploader as child
processes, each in its own session so that a terminal's Ctrl+C reaches only
this supervisor, which forwards one SIGTERM: every child drains with the same
guarantees as under systemd.  If the supervisor itself dies (SIGKILL, a crash),
the kernel kills every child and the broker with it (PR_SET_PDEATHSIG), so
nothing is left holding the ports for the next ``uvrd dev``.  The children's lines are interleaved on stdout,
labelled.  Like systemd, the supervisor holds a notify socket per child and
reports the stack ready when all of them sent READY=1.  A child that dies is
reported and the rest of the stack is stopped cleanly.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import structlog

from uvrd.cli.startup import add_config_argument, load_config
from uvrd.runtime import drain, logs, parent_death
from uvrd.runtime.lifecycle import Lifecycle
from uvrd.runtime.notify import Notifier

log = structlog.get_logger("uvrd.dev")

CHILDREN = ("processor", "uploader", "api")
STATE_DIRS = {"model_dir": "models", "spool_dir": "spool", "output_dir": "output"}


def default_state_dir() -> Path:
    """$XDG_STATE_HOME/uvrd, the XDG base directory for state that outlives a restart."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "uvrd"


def add_arguments(parser) -> None:
    add_config_argument(parser)
    parser.add_argument("--state-dir", type=Path, default=default_state_dir(),
                        help="the broker's data, models, spool and outputs, unless the configuration names them "
                             "(default $XDG_STATE_HOME/uvrd, ~/.local/state/uvrd)")
    parser.add_argument("--ephemeral", action="store_true",
                        help="keep the embedded broker in memory: stopping loses every queued task")


class Child:
    def __init__(self, name: str, config_path: Path | None, env: dict, workdir: Path):
        self.name = name
        self.notify_path = str(workdir / f"{name}.notify")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(self.notify_path)
        self._sock.setblocking(False)
        self.ready = False
        argv = [sys.executable, "-m", "uvrd", name] + (["--config", str(config_path)] if config_path else [])
        self.proc = subprocess.Popen(argv, env={**env, "NOTIFY_SOCKET": self.notify_path},
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True, preexec_fn=parent_death.preexec())
        self._pump = threading.Thread(target=self._relay, daemon=True)
        self._pump.start()

    def _relay(self) -> None:
        label = f"{self.name:<9}|".encode()
        for line in iter(self.proc.stdout.readline, b""):
            sys.stdout.buffer.write(label + b" " + line)
            sys.stdout.buffer.flush()

    def poll_notify(self) -> None:
        while True:
            try:
                data = self._sock.recv(4096)
            except BlockingIOError:
                return
            if b"READY=1" in data.split(b"\n"):
                self.ready = True

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def close(self) -> None:
        self._pump.join(2)
        self._sock.close()


def run(args) -> int:
    config = load_config(args)
    logs.configure("uvrd-dev")
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
    env.setdefault("UVRD_LOG_FORMAT", "console" if sys.stdout.isatty() else "json")
    for key, sub in STATE_DIRS.items():
        if f"processor.{key}" not in config.explicit:
            env[f"UVRD_PROCESSOR_{key.upper()}"] = str((args.state_dir / sub).resolve())
    lifecycle = Lifecycle(Notifier(), drain.drain_window(config.processor.drain_timeout))
    # Undone in reverse: the children stop (in _supervise) before the broker, the broker before its files go.
    with lifecycle.signals_installed(), contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="uvrd-dev-")))
        if "kafka.bootstrap_servers" not in config.explicit:
            try:
                broker = _embedded_broker(args, workdir)
            except RuntimeError as e:
                log.error("the embedded broker did not start", error=str(e))
                return 1
            stack.callback(_stop_broker, broker)
            env["UVRD_KAFKA_BOOTSTRAP_SERVERS"] = broker.bootstrap
            env.update(embedded_group_env(config))
            broker.create_uvrd_topics(config.topics)
        else:
            _ensure_topics(config)
        children = [Child(name, args.config, env, workdir) for name in CHILDREN]
        return _supervise(children, lifecycle, config)


def _stop_broker(broker) -> None:
    broker.stop()
    log.info("embedded broker stopped")


def _embedded_broker(args, workdir: Path):
    from uvrd.broker.loopback import free_port

    if args.ephemeral:
        from uvrd.broker.tansu import TansuBroker

        broker = TansuBroker(log_path=workdir / "broker.log", die_with_parent=True).start()
        log.info("embedded broker started (in memory: its topics vanish when it stops)", bootstrap=broker.bootstrap)
        return broker
    from uvrd.broker.local import LocalBroker

    data_dir = (args.state_dir / "broker").resolve()
    broker = LocalBroker(data_dir, port=free_port(), log_dir=workdir, die_with_parent=True).start()
    log.info("embedded broker started (durable: queued tasks survive a stop)", bootstrap=broker.bootstrap,
             data_dir=str(data_dir))
    return broker


def embedded_group_env(config) -> dict[str, str]:
    """UVRD_KAFKA_* overrides giving the embedded broker's short group timeouts, except for the
    settings the configuration names itself."""
    from uvrd.broker.group_settings import GROUP_SETTINGS

    chosen = {key: value for key, value in GROUP_SETTINGS.items() if f"kafka.{key}" not in config.explicit}
    if "session_timeout_ms" in chosen and "heartbeat_interval_ms" not in chosen:
        # The configuration's own heartbeat must stay well inside the session it gets.
        chosen["session_timeout_ms"] = max(chosen["session_timeout_ms"], 3 * config.kafka.heartbeat_interval_ms)
    return {f"UVRD_KAFKA_{key.upper()}": str(value) for key, value in chosen.items()}


def _supervise(children: list[Child], lifecycle: Lifecycle, config) -> int:
    announced = False
    failed = None
    while True:
        lifecycle.process_signals()
        for child in children:
            child.poll_notify()
        if not announced and all(c.ready for c in children):
            announced = True
            lifecycle.notifier.ready("stack ready")
            log.info("stack ready", api=config.api.public_url)
        dead = next((c for c in children if c.proc.poll() is not None), None)
        if dead is not None and not lifecycle.stopping:
            failed = dead
            log.error("a child exited; stopping the stack", child=dead.name, status=dead.proc.returncode)
            lifecycle.handle_term()
        if lifecycle.stopping:
            break
        time.sleep(0.1)
    return _stop(children, lifecycle, failed)


def _stop(children: list[Child], lifecycle: Lifecycle, failed: Child | None) -> int:
    for child in children:
        child.signal(signal.SIGTERM)
    quick_sent = False
    # The children keep their own drain deadlines; this one only guards against a hung child.
    deadline = time.monotonic() + lifecycle.drain_window + 30
    while any(c.proc.poll() is None for c in children):
        lifecycle.process_signals()
        if lifecycle.quick and not quick_sent:
            quick_sent = True
            for child in children:
                child.signal(signal.SIGTERM)  # their second signal: abandon and exit now
        if time.monotonic() > deadline:
            for child in children:
                if child.proc.poll() is None:
                    log.error("child did not stop in time; killing it", child=child.name)
                    child.signal(signal.SIGKILL)
        time.sleep(0.1)
    codes = {c.name: c.proc.returncode for c in children}
    for child in children:
        child.close()
    log.info("stack stopped", exit_status=codes)
    if failed is not None:
        return 1
    return 0 if all(code == 0 for code in codes.values()) else 1


def _ensure_topics(config) -> None:
    from uvrd.kafka.clients import client_settings
    from uvrd.boards.topics import ensure

    ensure(client_settings(config.kafka), config.topics)
