"""structlog set-up for every uvrd process.

- under journald (JOURNAL_STREAM names our stdout): native journal entries
  whose MESSAGE is the JSON line and whose fields include TASK_UUID etc.;
- on a terminal: structlog's console renderer;
- anywhere else (a pipe, ``uvrd dev``'s children): JSON lines on stdout.

Standard-library loggers (kafka-python, audio-separator) go through the same
``ProcessorFormatter``, so every line has one shape.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any, TextIO

import structlog
from structlog.typing import Processor

from uvrd.runtime import journal

SHARED_PROCESSORS: list[Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    structlog.processors.StackInfoRenderer(),
    structlog.processors.format_exc_info,
]

_PRIORITY = {"critical": 2, "error": 3, "warning": 4, "info": 6, "debug": 7}


class JournalHandler(logging.Handler):
    """Sends each rendered JSON line as a native journal entry with fields."""

    def __init__(self, identifier: str, sender: journal.JournalSender, fallback: logging.Handler):
        super().__init__()
        self.identifier = identifier
        self.sender = sender
        self.fallback = fallback

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            event = json.loads(line)
            fields = {"MESSAGE": line, "PRIORITY": str(_PRIORITY.get(event.get("level"), 6)),
                      "SYSLOG_IDENTIFIER": self.identifier}
            for key, value in event.items():
                name = journal.field_name(key)
                if name and name not in fields:
                    fields[name] = value if isinstance(value, str) else json.dumps(value)
            self.sender.send(fields)
        except OSError:
            # Journal gone or entry too large: the stdout stream still reaches journald.
            self.fallback.handle(record)
        except Exception:
            self.handleError(record)


def configure(identifier: str, level: str | None = None, stream: TextIO | None = None) -> None:
    stream = sys.stdout if stream is None else stream
    level = (level or os.environ.get("UVRD_LOG_LEVEL") or "INFO").upper()
    fmt = os.environ.get("UVRD_LOG_FORMAT", "")
    under_journal = journal.stream_is_journal(stream)
    console = fmt == "console" or (not fmt and not under_journal and _isatty(stream))
    renderer = structlog.dev.ConsoleRenderer() if console else structlog.processors.JSONRenderer()

    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=SHARED_PROCESSORS,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    stream_handler = logging.StreamHandler(stream)
    stream_handler.setFormatter(formatter)
    handler: logging.Handler = stream_handler
    if under_journal and not console:
        handler = JournalHandler(identifier, journal.JournalSender(), stream_handler)
        handler.setFormatter(formatter)

    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # kafka-python narrates every connection at INFO; uvrd logs the events that matter itself.
    if level != "DEBUG":
        logging.getLogger("kafka").setLevel(logging.WARNING)
    # Even at DEBUG: the admin client logs its whole configuration on start, SASL and TLS passwords included.
    logging.getLogger("kafka.admin.client").setLevel(logging.INFO if level == "DEBUG" else logging.WARNING)

    structlog.configure(
        processors=[*SHARED_PROCESSORS, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def bind_task(**fields: Any) -> None:
    """Start a message's context: nothing from the previous message leaks into it."""
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(**fields)
