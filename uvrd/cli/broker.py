"""``uvrd broker``."""

from __future__ import annotations

from pathlib import Path

from uvrd.cli.startup import add_config_argument, load_config


def add_arguments(parser) -> None:
    add_config_argument(parser)
    parser.add_argument("--data-dir", type=Path, default=None, help="where the broker keeps its data "
                        "(default: broker.data_dir, /var/lib/uvrd/broker)")
    parser.add_argument("--listen", default=None, help="HOST:PORT (default: broker.listen, 127.0.0.1:9092)")


def run(args) -> int:
    from uvrd.broker import daemon
    from uvrd.runtime import logs

    config = load_config(args)
    logs.configure("uvrd-broker")
    return daemon.serve(config, args.data_dir, args.listen)
