"""``uvrd processor``."""

from __future__ import annotations

from uvrd.cli.startup import add_config_argument, run_consumer_daemon
from uvrd.config import EX_CONFIG


def add_arguments(parser) -> None:
    add_config_argument(parser)


def run(args) -> int:
    from uvrd.processor.daemon import Processor
    from uvrd.processor.engine import EngineDied

    try:
        return run_consumer_daemon(args, Processor)
    except EngineDied as e:
        import structlog

        structlog.get_logger("uvrd.cli").error("separation engine could not run", error=str(e))
        return EX_CONFIG if e.fatal_config else 1
