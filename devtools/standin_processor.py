"""``python -m devtools.standin_processor --config FILE``: ``uvrd processor`` whose engine child runs the
stand-in accelerator's forward (standin_accelerator.py) and logs every MDX model's forward to
``UVRD_STANDIN_BUSY_LOG``.  Bench only: nothing installed runs it."""

from __future__ import annotations

import argparse
import functools
import sys


def main(argv: list[str] | None = None) -> int:
    from devtools import standin_accelerator
    from uvrd.cli.startup import add_config_argument, run_consumer_daemon
    from uvrd.processor.daemon import Processor
    from uvrd.processor.engine import Engine

    parser = argparse.ArgumentParser(prog="python -m devtools.standin_processor", description=__doc__)
    add_config_argument(parser)
    args = parser.parse_args(argv)
    args.command = "processor"
    engine = functools.partial(Engine, child=standin_accelerator.engine_child_main)
    return run_consumer_daemon(args, lambda config: Processor(config, engine=engine))


if __name__ == "__main__":
    sys.exit(main())
