"""What the commands share at start-up: the ``--config`` argument, loading the configuration (a bad
one is reported in one line with exit status 78, EX_CONFIG), and running a consuming daemon."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from uvrd.config import EX_CONFIG, ConfigError
from uvrd.config.files import load


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


def run_consumer_daemon(args, handler_class) -> int:
    """Load the configuration, set up logging, run a ConsumerDaemon with a *handler_class* handler;
    fencing ends it with status 1."""
    import structlog

    from uvrd.kafka.commit_mode import Fenced
    from uvrd.daemon.consumer_daemon import ConsumerDaemon
    from uvrd.runtime import logs

    config = load_config(args)
    logs.configure(f"uvrd-{args.command}")
    try:
        return ConsumerDaemon(config, handler_class(config)).run()
    except Fenced as e:
        structlog.get_logger("uvrd.cli").error(
            f"another {args.command} uses this transactional_id; give each its own", error=str(e))
        return 1
