"""``uvrd uploader``."""

from __future__ import annotations

from uvrd.cli.startup import add_config_argument, run_consumer_daemon


def add_arguments(parser) -> None:
    add_config_argument(parser)


def run(args) -> int:
    from uvrd.uploader.daemon import Uploader

    return run_consumer_daemon(args, Uploader)
