"""journald's native protocol, so that log lines carry fields such as TASK_UUID.

Plain stdout under journald gives only MESSAGE; ``journalctl TASK_UUID=…``
needs the fields sent as a native entry (systemd's journal-native protocol:
``KEY=value`` lines, or ``KEY\\n<le64 length><value>\\n`` for values with a
newline).  The unit's cgroup still gives ``_SYSTEMD_UNIT``, so
``journalctl -u`` finds the entries as before.
"""

from __future__ import annotations

import os
import re
import socket
import struct
from collections.abc import Mapping
from typing import TextIO

SOCKET_PATH = "/run/systemd/journal/socket"
_BAD_FIELD_CHARS = re.compile(r"[^A-Z0-9_]")


def field_name(key: str) -> str | None:
    name = _BAD_FIELD_CHARS.sub("_", key.upper()).lstrip("_0123456789")
    return name[:64] or None


def encode(fields: dict[str, str]) -> bytes:
    out = bytearray()
    for key, value in fields.items():
        data = value.encode("utf-8", "replace")
        if b"\n" in data:
            out += key.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += key.encode() + b"=" + data + b"\n"
    return bytes(out)


def stream_is_journal(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """True when *stream* is the journal stream systemd connected (JOURNAL_STREAM=dev:ino)."""
    environ = os.environ if environ is None else environ
    value = environ.get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    try:
        st = os.fstat(stream.fileno())
        return (st.st_dev, st.st_ino) == (int(dev), int(ino))
    except (ValueError, OSError, AttributeError):
        return False


class JournalSender:
    def __init__(self, path: str = SOCKET_PATH):
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)

    def send(self, fields: dict[str, str]) -> None:
        """Raises OSError when the journal cannot take the entry (caller falls back)."""
        self._sock.sendto(encode(fields), self.path)

    def close(self) -> None:
        self._sock.close()
