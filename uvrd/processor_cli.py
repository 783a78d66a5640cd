"""``uvrd processor``."""

from __future__ import annotations

from .cli import add_config_argument, run_consumer_daemon
from .config import EX_CONFIG


def add_arguments(parser) -> None:
    add_config_argument(parser)


def run(args) -> int:
    from .engine import EngineDied
    from .processor import Processor

    try:
        return run_consumer_daemon(args, Processor)
    except EngineDied as e:
        import structlog

        structlog.get_logger("uvrd.cli").error("separation engine could not run", error=str(e))
        return EX_CONFIG if e.fatal_config else 1
