"""The ``uvrd`` command: one subcommand per daemon or tool.

Each subcommand is a module of this package, imported only when it runs, with
``add_arguments(parser)`` and ``run(args) -> int``; what they share at start-up
(``--config``, loading it with exit status 78 for a bad one, running a consuming
daemon) is in :mod:`uvrd.cli.startup`.  Nothing outside this package imports it.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from uvrd import __version__

COMMANDS = {
    "processor": ("uvrd.cli.processor", "consume separation tasks from Kafka and produce results"),
    "api": ("uvrd.cli.api", "serve the HTTP API that accepts audio and produces tasks"),
    "uploader": ("uvrd.cli.uploader", "deliver results to their webhooks"),
    "submit": ("uvrd.cli.submit", "upload a file to the API and optionally wait for its stems"),
    "cancel": ("uvrd.cli.cancel", "ask the API to cancel tasks"),
    "status": ("uvrd.cli.status", "the deployment at a glance: workers, queues, tasks in flight, dead letters"),
    "dead-letters": ("uvrd.cli.dead_letters", "list what went to the dead-letter topic, and why"),
    "keys": ("uvrd.cli.keys", "add, list or revoke the API's named keys (an operator key's call)"),
    "models": ("uvrd.cli.models", "list the models audio-separator knows, or download them into model_dir"),
    "broker": ("uvrd.cli.broker", "run the single-host Kafka-compatible broker (Tansu on a local object store)"),
    "dev": ("uvrd.cli.dev", "run broker, api, processor and uploader in the foreground"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="uvrd", description="vocal/instrument separation daemons")
    parser.add_argument("--version", action="version", version=f"uvrd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    argv = sys.argv[1:] if argv is None else argv
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:  # import only the module that runs: the others may pull in heavy code
            importlib.import_module(module_name).add_arguments(p)
    args = parser.parse_args(argv)
    return importlib.import_module(COMMANDS[args.command][0]).run(args)
