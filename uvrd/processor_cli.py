"""``uvrd processor``."""

from __future__ import annotations

import structlog

from . import logs
from .cli import add_config_argument, load_config
from .config import EX_CONFIG


def add_arguments(parser) -> None:
    add_config_argument(parser)


def run(args) -> int:
    from .delivery import Fenced
    from .engine import EngineDied
    from .processor import Processor

    config = load_config(args)
    logs.configure("uvrd-processor")
    log = structlog.get_logger("uvrd.cli")
    try:
        return Processor(config).run()
    except EngineDied as e:
        log.error("separation engine could not run", error=str(e))
        return EX_CONFIG if e.fatal_config else 1
    except Fenced as e:
        log.error("another processor uses this transactional_id; give each worker its own", error=str(e))
        return 1
