"""The ``uvrd`` command: one subcommand per daemon or tool.

Each subcommand lives in its own module, imported only when it runs, with
``add_arguments(parser)`` and ``run(args) -> int``.  Daemons load the
configuration through :func:`load_config`, which reports a bad configuration
in one line and gives exit status 78 (EX_CONFIG).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from uvrd import __version__
from uvrd.config import EX_CONFIG, ConfigError
from uvrd.config_files import load

COMMANDS = {
    "processor": ("uvrd.processor.cli", "consume separation tasks from Kafka and produce results"),
    "api": ("uvrd.api.server", "serve the HTTP API that accepts audio and produces tasks"),
    "uploader": ("uvrd.uploader.cli", "deliver results to their webhooks"),
    "submit": ("uvrd.submit", "upload a file to the API and optionally wait for its stems"),
    "cancel": ("uvrd.cancel", "ask the API to cancel tasks"),
    "status": ("uvrd.status_cli", "the deployment at a glance: workers, queues, tasks in flight, dead letters"),
    "dead-letters": ("uvrd.dead_letters_cli", "list what went to the dead-letter topic, and why"),
    "models": ("uvrd.models_cli", "list the models audio-separator knows, or download them into model_dir"),
    "broker": ("uvrd.broker.daemon", "run the single-host Kafka-compatible broker (Tansu on a local object store)"),
    "dev": ("uvrd.devstack", "run broker, api, processor and uploader in the foreground"),
}


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=None,
                        help="TOML configuration file (default /etc/uvrd/uvrd.toml, if present)")


def load_config(args):
    try:
        config = load(args.config)
    except (ConfigError, OSError) as e:
        # One line, on stderr: the journal shows it and RestartPreventExitStatus=78 stops restarts.
        print(f"uvrd {args.command}: configuration error: {e}", file=sys.stderr, flush=True)
        raise SystemExit(EX_CONFIG) from None
    for line in config.deprecated:
        print(f"uvrd {args.command}: configuration warning: {line}", file=sys.stderr, flush=True)
    return config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="uvrd", description="vocal/instrument separation daemons")
    parser.add_argument("--version", action="version", version=f"uvrd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    argv = sys.argv[1:] if argv is None else argv
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:  # import only the module that runs: the others may pull in heavy code
            importlib.import_module(module_name).add_arguments(p)
    args = parser.parse_args(argv)
    return importlib.import_module(COMMANDS[args.command][0]).run(args)


def run_consumer_daemon(args, handler_class) -> int:
    """Load the configuration, set up logging, run a ConsumerDaemon with a *handler_class* handler;
    fencing ends it with status 1."""
    import structlog

    from uvrd.kafka.commit_mode import Fenced
    from uvrd.kafka.consumer_daemon import ConsumerDaemon
    from uvrd.runtime import logs

    config = load_config(args)
    logs.configure(f"uvrd-{args.command}")
    try:
        return ConsumerDaemon(config, handler_class(config)).run()
    except Fenced as e:
        structlog.get_logger("uvrd.cli").error(
            f"another {args.command} uses this transactional_id; give each its own", error=str(e))
        return 1
