"""``uvrd uploader``."""

from __future__ import annotations

import structlog

from . import logs
from .cli import add_config_argument, load_config


def add_arguments(parser) -> None:
    add_config_argument(parser)


def run(args) -> int:
    from .delivery import Fenced
    from .uploader import Uploader

    config = load_config(args)
    logs.configure("uvrd-uploader")
    try:
        return Uploader(config).run()
    except Fenced as e:
        structlog.get_logger("uvrd.cli").error("another uploader uses this transactional_id", error=str(e))
        return 1
