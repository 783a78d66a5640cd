"""``uvrd api``."""

from __future__ import annotations

from uvrd.cli.startup import add_config_argument, load_config


def add_arguments(parser) -> None:
    add_config_argument(parser)


def run(args) -> int:
    from uvrd.api import server
    from uvrd.runtime import logs

    config = load_config(args)
    logs.configure("uvrd-api")
    return server.serve(config)
