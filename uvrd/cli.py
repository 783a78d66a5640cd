"""The ``uvrd`` command: one subcommand per daemon or tool."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import structlog

from . import __version__, logs
from .config import EX_CONFIG, ConfigError, load

EX_SOFTWARE = 70


def _run_processor(config) -> int:
    from .delivery import Fenced
    from .engine import EngineDied
    from .processor import Processor

    log = structlog.get_logger("uvrd.cli")
    try:
        return Processor(config).run()
    except EngineDied as e:
        log.error("separation engine could not run", error=str(e))
        return EX_CONFIG if e.fatal_config else 1
    except Fenced as e:
        log.error("another processor uses this transactional_id; give each worker its own", error=str(e))
        return 1


COMMANDS = {
    "processor": ("consume separation tasks from Kafka and produce results", _run_processor),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="uvrd", description="vocal/instrument separation daemons")
    parser.add_argument("--version", action="version", version=f"uvrd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, _) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--config", type=Path, default=None,
                       help="TOML configuration file (default /etc/uvrd/uvrd.toml, if present)")
    args = parser.parse_args(argv)
    try:
        config = load(args.config)
    except ConfigError as e:
        # One line, on stderr: the journal shows it and RestartPreventExitStatus=78 stops restarts.
        print(f"uvrd {args.command}: configuration error: {e}", file=sys.stderr, flush=True)
        return EX_CONFIG
    except OSError as e:
        print(f"uvrd {args.command}: configuration error: {e}", file=sys.stderr, flush=True)
        return EX_CONFIG
    logs.configure(f"uvrd-{args.command}")
    return COMMANDS[args.command][1](config)
